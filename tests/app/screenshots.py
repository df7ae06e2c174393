"""Screenshots of every page from the real app in headless Chromium, plus the speed numbers.

    python tests/app/screenshots.py [--store checkpoints] [--out docs/screenshots]

Not collected by pytest (no test_ prefix). Works on a copy of the store, so the short run it
starts for the Train picture never lands in the real one. Prints: first render after the server
is up, and the time to switch dataset on the Samples and Results pages.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[2])]
from test_browser import (CHROMIUM, CHROMIUM_ARGS, drag_box, free_port, go, idle, open_advanced,  # noqa: E402
                          progress_step, set_number, start_server, wait_healthy, wait_until)
from support import ROOT, build_store, copy_store, stop_workers  # noqa: E402
from dualscale import Store  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402


def prepare_store(src: Path, tmp: Path) -> Path:
    if any(Store(src).runs()):
        return copy_store(src, tmp / "store")
    print(f"{src} has no runs: building the small test store")
    return build_store(tmp / "store")


def timed(label: str, action) -> float:
    t0 = time.perf_counter()
    action()
    dt = time.perf_counter() - t0
    print(f"{label}: {dt:.2f} s")
    return dt


def shoot(page, out: Path, name: str) -> None:
    page.wait_for_timeout(800)  # let Plotly finish drawing
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    print(f"wrote {out / name}.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(ROOT / "checkpoints"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--dataset", default="dino")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dualscale-shots-"))
    root = prepare_store(Path(a.store), tmp)
    datasets = sorted({r.config.dataset for r in Store(root).runs()})
    dataset = a.dataset if a.dataset in datasets else datasets[0]
    other = next((d for d in datasets if d != dataset), dataset)
    port = free_port()
    with open(tmp / "streamlit.log", "wb") as log:
        server = start_server(root, port, log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, server)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                # Tall viewport: Streamlit scrolls inside its main block, so full_page sees only this.
                page = browser.new_page(viewport={"width": 1440, "height": 1700}, device_scale_factor=1)
                page.set_default_timeout(60_000)
                tour(page, url, out, dataset, other)
                browser.close()
        finally:
            stop_workers(root)
            server.terminate()
            server.wait(15)
    shutil.rmtree(tmp, ignore_errors=True)


def switch(page, dataset: str, label: str) -> None:
    """Time from the click on a dataset to its figures on screen (the dropdown itself excluded)."""
    page.get_by_role("combobox", name="Dataset", exact=True).click()
    option = page.get_by_role("option", name=dataset, exact=True)
    option.wait_for()
    timed(label, lambda: (option.click(),
                          page.get_by_text(re.compile(f"^{re.escape(dataset)}: ")).wait_for(),
                          page.locator(".js-plotly-plot").nth(2).wait_for()))
    idle(page)


def tour(page, url: str, out: Path, dataset: str, other: str) -> None:
    timed("first render after the server is up (Verdict: sentences, forest plot, table)",
          lambda: (page.goto(f"{url}/?dataset={dataset}"),
                   page.locator("h1", has_text="Does adaptive").wait_for(),
                   page.locator('.js-plotly-plot, [data-testid="stAlert"]').first.wait_for()))
    idle(page)
    shoot(page, out, "verdict")
    go(page, "Results", "Results")
    page.get_by_text("Table 3").wait_for()
    shoot(page, out, "results")
    go(page, "Samples", "Samples")
    switch(page, other, f"Samples: switch {dataset} -> {other} (first time: figures built)")
    switch(page, dataset, f"Samples: switch {other} -> {dataset} (cached)")
    switch(page, other, f"Samples: switch {dataset} -> {other} (cached)")
    switch(page, dataset, f"Samples: switch {other} -> {dataset} (cached)")
    shoot(page, out, "samples")
    go(page, "alpha(t)", "alpha(t)")
    shoot(page, out, "alpha")
    go(page, "Schedules", "Noise schedules")
    page.locator(".js-plotly-plot").nth(2).wait_for()  # the curves, the start-KL bars, the study's forest plot
    idle(page)
    shoot(page, out, "schedules")
    go(page, "Inside", "Inside the models")
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=120_000)  # where in t, then the branch field
    idle(page)
    shoot(page, out, "inside")
    go(page, "Your data", "Your data")
    page.get_by_text("drawing", exact=True).click()
    idle(page)
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for()
    for box in ((0.46, 0.3, 0.08, 0.4), (0.3, 0.12, 0.4, 0.08), (0.3, 0.8, 0.4, 0.08)):  # an I, drawn
        drag_box(page, plot, *box)
    page.get_by_text(re.compile(r": \d+ points, as it will be trained")).wait_for()
    idle(page)
    shoot(page, out, "data")
    train_live(page, out)


def train_live(page, out: Path) -> None:
    """Start a short run and photograph it mid-way, alpha(t) preview included."""
    go(page, "Train", "Train")
    open_advanced(page)
    for label, value in (("Training steps", 2000), ("Training points", 5000),
                         ("Samples for evaluation", 2000), ("Seed", 99)):
        set_number(page, label, value)
    page.get_by_role("button", name="Start training").click()
    wait_until(lambda: (s := progress_step(page)) and s[0] >= 0.35 * s[1], 240, "the run to progress")
    # Loss, alpha(t) and sample previews (the previews come with every 10th of the run).
    wait_until(lambda: page.locator(".js-plotly-plot").count() >= 3, 120, "the live previews")
    page.wait_for_timeout(1500)
    print("live charts on screen:", page.locator(".js-plotly-plot").count())
    shoot(page, out, "train")


if __name__ == "__main__":
    main()
