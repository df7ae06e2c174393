"""Page loads from a real browser: each dashboard page's main content, the first visit after its
server is up (cold) and again (warm), against a bare one-line Streamlit page timed the same way.

    python benchmarks/page_loads.py [--store checkpoints] [--repeats 3]

For each repeat: a fresh `streamlit run app.py` on the store (a copy), then every page opened in a
new headless Chromium tab twice; and a fresh server of a one-line page opened twice. Prints the
median (min-max) seconds per page and its ratio to the bare page's median in the same run. The
target (issue 20): every page within 2x the bare page, cold and warm.
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


def load(browser, url: str, title: str) -> float:
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    t0 = time.perf_counter()
    page.goto(url)
    page.locator("h1", has_text=title).wait_for(timeout=120_000)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=120_000)
    dt = time.perf_counter() - t0
    page.close()
    return dt


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
    tmp = Path(tempfile.mkdtemp(prefix="dualscale-loads-"))
    shutil.copytree(a.store, tmp / "store", ignore=shutil.ignore_patterns("locks", "progress", "cache"),
                    symlinks=True)
    (tmp / "bare.py").write_text(BARE)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for _ in range(a.repeats):
            proc, url = serve([sys.executable, "-m", "streamlit", "run", "bare.py"], tmp)
            for kind in ("cold", "warm"):
                times.setdefault(f"bare ({kind})", []).append(load(browser, url, "Bare"))
            proc.terminate()
            proc.wait()
            for path, title in PAGES.items():  # each page the first after a fresh server: cold
                proc, url = serve([sys.executable, "-m", "streamlit", "run", "app.py"], ROOT, tmp / "store")
                for kind in ("cold", "warm"):
                    times.setdefault(f"/{path} ({kind})", []).append(load(browser, f"{url}/{path}", title))
                proc.terminate()
                proc.wait()
        browser.close()
    shutil.rmtree(tmp, ignore_errors=True)
    bare = {k: statistics.median(times[f"bare ({k})"]) for k in ("cold", "warm")}
    print(f"median of {a.repeats} (min-max), seconds from navigation to the page's title with no script running")
    for name, xs in times.items():
        kind = "cold" if "(cold)" in name else "warm"
        m = statistics.median(xs)
        print(f"  {name:22s} {m:6.2f} ({min(xs):.2f}-{max(xs):.2f})  x{m / bare[kind]:.2f} of the bare page")


if __name__ == "__main__":
    main()
