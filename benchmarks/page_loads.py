"""Page loads from a real browser: each dashboard page's main content, the first visit after its
server is up (cold) and again (warm), against a bare one-line Streamlit page timed the same way.

    python benchmarks/page_loads.py [--store checkpoints] [--repeats 3]

For each repeat: a fresh `streamlit run app.py` on the store (a copy), then every page opened in a
new headless Chromium tab twice; and a fresh server of a one-line page opened twice. Prints the
median (min-max) seconds per page and its ratio to the bare page's median in the same run. The
target (issue 20): every page within 2x the bare page, cold and warm. Beside it, the median time to
the page's first plot (a Plotly chart or an SVG drawing) where the page draws one.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "app")]
from test_browser import CHROMIUM, CHROMIUM_ARGS, free_port, wait_healthy  # noqa: E402

# page path -> what says its main content is on screen
PAGES = {"": "Does adaptive", "results": "Results", "runs": "Runs", "train": "Train", "samples": "Samples", "alpha": "alpha(t)",
         "schedules": "Noise schedules", "inside": "Inside the models", "data": "Your data"}
BARE = 'import streamlit as st\nst.title("Bare")\nst.write("one line")\n'


FIRST_PLOT = ".js-plotly-plot, [data-testid='stMarkdownContainer'] svg, [data-testid='stImage'] img"


def load(browser, url: str, title: str) -> tuple[float, float | None]:
    """(seconds to the title with no script running, seconds to the first plot: None if none drew
    within 10 s after that)."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    t0 = time.perf_counter()
    page.goto(url)
    first_plot = None
    heading, plots = page.locator("h1", has_text=title), page.locator(FIRST_PLOT)
    running = page.locator('[data-testid="stStatusWidget"]')
    while time.perf_counter() - t0 < 120:
        if first_plot is None and plots.count():
            first_plot = time.perf_counter() - t0
        if heading.count() and not running.count():
            break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"{url}: no {title!r} within 120 s")
    dt = time.perf_counter() - t0
    while first_plot is None and time.perf_counter() - t0 < dt + 10:  # plots draw after the script ends too
        if plots.count():
            first_plot = time.perf_counter() - t0
        time.sleep(0.05)
    page.close()
    return dt, first_plot


def serve(cmd, cwd, env_store=None):
    import os

    port = free_port()
    env = {**os.environ, **({"DUALSCALE_STORE": str(env_store)} if env_store else {})}
    proc = subprocess.Popen([*cmd, "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, timeout=120)
    return proc, url


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(ROOT / "checkpoints"))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    times: dict[str, list[float]] = {}
    plots: dict[str, list[float]] = {}  # seconds to the first plot, pages that draw one
    tmp = Path(tempfile.mkdtemp(prefix="dualscale-loads-"))
    shutil.copytree(a.store, tmp / "store", ignore=shutil.ignore_patterns("locks", "progress", "cache"),
                    symlinks=True)
    (tmp / "bare.py").write_text(BARE)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for _ in range(a.repeats):
            proc, url = serve([sys.executable, "-m", "streamlit", "run", "bare.py"], tmp)
            for kind in ("cold", "warm"):
                times.setdefault(f"bare ({kind})", []).append(load(browser, url, "Bare")[0])
            proc.terminate()
            proc.wait()
            for path, title in PAGES.items():  # each page the first after a fresh server: cold
                proc, url = serve([sys.executable, "-m", "streamlit", "run", "app.py"], ROOT, tmp / "store")
                for kind in ("cold", "warm"):
                    done, plot = load(browser, f"{url}/{path}", title)
                    times.setdefault(f"/{path} ({kind})", []).append(done)
                    if plot is not None:
                        plots.setdefault(f"/{path} ({kind})", []).append(plot)
                proc.terminate()
                proc.wait()
        browser.close()
    shutil.rmtree(tmp, ignore_errors=True)
    bare = {k: statistics.median(times[f"bare ({k})"]) for k in ("cold", "warm")}
    print(f"median of {a.repeats} (min-max), seconds from navigation to the page's title with no script running (and to its first plot)")
    for name, xs in times.items():
        kind = "cold" if "(cold)" in name else "warm"
        m = statistics.median(xs)
        plot = (f"; first plot {statistics.median(plots[name]):.2f} s" if name in plots else "")
        print(f"  {name:22s} {m:6.2f} ({min(xs):.2f}-{max(xs):.2f})  x{m / bare[kind]:.2f} of the bare page{plot}")


if __name__ == "__main__":
    main()
