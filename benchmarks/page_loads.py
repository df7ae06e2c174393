"""Page loads from a real browser: each dashboard page, the first visit after its server is up
(cold) and again (warm), against a bare Streamlit page (a title and one small Plotly chart) timed
the same way.

    python benchmarks/page_loads.py [--store checkpoints] [--repeats 3]

For each repeat: a fresh `streamlit run app.py` on the store (a copy), then every page opened in a
new headless Chromium tab twice; and a fresh server of the bare page opened twice. Two clocks from
navigation: the page's first plot in the main area (a Plotly chart drawn, or a table's canvas: what a
user waits for), and the script's end (the app root's data-test-script-state reads
"notRunning" with the title on screen). Prints the median (min-max) of each and its ratio to the
bare page's in the same run. The target (issue 27): every page within 2x the bare page, cold and
warm, to its first plot.
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
BARE = ('import plotly.graph_objects as go\nimport streamlit as st\nst.title("Bare")\n'
        'st.plotly_chart(go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2])))\n')


MAIN = '[data-testid="stMain"] '
FIRST_PLOT = ", ".join(MAIN + x for x in (".js-plotly-plot .main-svg", "[data-testid='stDataFrame'] canvas"))
SCRIPT_DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def load(browser, url: str, title: str) -> tuple[float, float | None]:
    """(seconds to the script's end with the title on screen, seconds to the first plot in the main
    area: None if none drew within 10 s after the script ended)."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    t0 = time.perf_counter()
    page.goto(url)
    first_plot = None
    heading, plots, done = page.locator("h1", has_text=title), page.locator(FIRST_PLOT), page.locator(SCRIPT_DONE)
    while time.perf_counter() - t0 < 120:
        if first_plot is None and plots.count():
            first_plot = time.perf_counter() - t0
        if heading.count() and done.count():
            break
        time.sleep(0.02)
    else:
        raise TimeoutError(f"{url}: no {title!r} within 120 s")
    dt = time.perf_counter() - t0
    while first_plot is None and time.perf_counter() - t0 < dt + 10:  # plots draw after the script ends too
        if plots.count():
            first_plot = time.perf_counter() - t0
        time.sleep(0.02)
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
    local = {"locks", "progress", "cache"}  # this machine's, at the store's root; reference/cache/ ships (the verdict)
    shutil.copytree(a.store, tmp / "store", symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in local and Path(d) == Path(a.store)])
    (tmp / "bare.py").write_text(BARE)
    shutil.copytree(ROOT / ".streamlit", tmp / ".streamlit")  # the bare page under the app's settings
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for _ in range(a.repeats):
            proc, url = serve([sys.executable, "-m", "streamlit", "run", "bare.py"], tmp)
            for kind in ("cold", "warm"):
                done, plot = load(browser, url, "Bare")
                times.setdefault(f"bare ({kind})", []).append(done)
                plots.setdefault(f"bare ({kind})", []).append(plot)
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
    bare_plot = {k: statistics.median(plots[f"bare ({k})"]) for k in ("cold", "warm")}
    print(f"median of {a.repeats} (min-max), seconds from navigation to the first plot in the main area, and to the "
          "script's end; each over the bare page's (a title and one small Plotly chart) in the same run")
    for name, xs in times.items():
        kind = "cold" if "(cold)" in name else "warm"
        m, ps = statistics.median(xs), plots.get(name, [])
        first = (f"first plot {statistics.median(ps):5.2f} ({min(ps):.2f}-{max(ps):.2f}) x{statistics.median(ps) / bare_plot[kind]:.2f}"
                 if len(ps) == len(xs) else f"{'no plot':>30s}")
        print(f"  {name:20s} {first}   script end {m:5.2f} ({min(xs):.2f}-{max(xs):.2f}) x{m / bare[kind]:.2f}")


if __name__ == "__main__":
    main()
