"""The dashboard in a real browser: `streamlit run app.py` driven by Playwright on headless
Chromium (Debian's /usr/bin/chromium; `playwright install` is not needed).

One journey, in order (the tests share one server, one store and one page): open the app,
visit every page, refuse a bad setting, train a short run and watch it live, reload mid-run,
see it finish, download the CSV. Every step checks that no page shows an exception.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from support import ROOT, RUNS, SMALL, copy_store, small_config, stop_workers, wait_until
from dualscale import METRICS, Store, TrainConfig

# In CI (.ci/run installs both) a missing browser or driver is a failure, not a skip.
if os.environ.get("CI"):
    import playwright.sync_api as sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("DUALSCALE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
if not Path(CHROMIUM).exists() and os.environ.get("CI"):
    raise RuntimeError(f"no chromium at {CHROMIUM}: .ci/run should have installed it")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

# The run this journey trains: long enough to reload mid-run, short enough for a test.
LIVE = small_config("moons", "adaptive", 5, steps=500)
DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 900}
TIMEOUT_MS = 90_000  # a cap, not a wait: on a loaded machine (CI beside a sweep) pages take longer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, log) -> subprocess.Popen:
    env = {**os.environ, "DUALSCALE_STORE": str(root), "DUALSCALE_DEVICE": "cpu"}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.showErrorDetails", "full"]  # a test must see a traceback if one happens
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "streamlit exited during start-up"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("streamlit did not become healthy")


@pytest.fixture(scope="module")
def server(small_store, tmp_path_factory):
    yield from serve(small_store, tmp_path_factory.mktemp("browser"))


def serve(small_store, folder: Path):
    """A streamlit server of app.py on a copy of the small store in `folder`: yields (url, store root);
    stops its workers and itself after (a fixture's body: `yield from serve(...)`)."""
    root = copy_store(small_store, folder / "store")
    port = free_port()
    log_path = root.parent / "streamlit.log"
    with open(log_path, "wb") as log:
        proc = start_server(root, port, log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            yield url, root
        finally:
            stop_workers(root)
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(log_path.read_text()[-3000:])  # shown by pytest only when something failed


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(accept_downloads=True, viewport=DESKTOP)
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()
        browser.close()


@pytest.fixture(autouse=True)
def desktop(page):
    """Every test starts at a desktop's size, whatever the test before it left (a failed phone-size check
    must not leave the next test with a collapsed sidebar)."""
    page.set_viewport_size(DESKTOP)


def laid_out(page, check, what: str):
    """Wait until `check()` holds: after a resize Plotly and Streamlit lay the page out again on their own
    clock (debounced, slower on a loaded machine), so geometry is awaited, never read once."""
    def holds():
        try:
            return check()
        except (TypeError, AssertionError):  # a box not drawn yet reads None
            return False
    try:
        return wait_until(holds, 30, what, page)
    except AssertionError:
        check()  # the check's own message, where it has one
        raise


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")[:2000]
    assert "Traceback" not in page.inner_text("body")


# The app root says whether a script run is in progress ("initial", "running", "rerunRequested",
# "notRunning"). The status widget cannot say it: with toolbarMode = "minimal" it is never drawn,
# and where it is drawn it appears only half a second into a run.
SCRIPT_DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def idle(page) -> None:
    """Wait until the script run that the last action started has finished."""
    page.wait_for_timeout(300)  # let the rerun begin before asking whether it ended
    page.locator(SCRIPT_DONE).wait_for(state="attached", timeout=TIMEOUT_MS)


def go(page, name: str, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=name).first.click()
    page.locator("h1", has_text=title).wait_for()
    idle(page)
    no_exception(page)


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    idle(page)


def open_advanced(page) -> None:
    expander = page.locator('[data-testid="stSidebar"] [data-testid="stExpander"] summary')
    if page.get_by_label("Training steps", exact=True).count() == 0 or \
            not page.get_by_label("Training steps", exact=True).is_visible():
        expander.click()
    page.get_by_label("Training steps", exact=True).wait_for()


def choose(page, label: str, option: str) -> None:
    """Pick an option of a st.selectbox (a react-aria combobox)."""
    box = page.get_by_role("combobox", name=label, exact=True)
    for _ in range(3):  # a rerun landing on the click can close the list again
        box.click()
        item = page.get_by_role("option", name=option, exact=True)
        try:
            item.click(timeout=3000)
            break
        except sync_api.TimeoutError:
            continue
    idle(page)
    assert box.input_value() == option


def progress_step(page) -> tuple[int, int] | None:
    bar = page.locator('[data-testid="stProgress"]')
    if bar.count() == 0:
        return None
    m = re.search(r"step ([\d,]+) / ([\d,]+)", bar.first.inner_text())
    return (int(m[1].replace(",", "")), int(m[2].replace(",", ""))) if m else None


def drag_box(page, plot, fx: float, fy: float, w: float, h: float) -> None:
    """A real mouse drag over a Plotly chart's plot area, from (fx, fy) across (w, h), in fractions of it."""
    area = plot.locator(".nsewdrag").first.bounding_box()
    x0, y0 = area["x"] + area["width"] * fx, area["y"] + area["height"] * fy
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + area["width"] * w, y0 + area["height"] * h, steps=8)
    page.mouse.up()
    idle(page)


# ------------------------------------------------------------------------------- journey

def test_first_page_is_the_verdict(server, page):
    url, _ = server
    t0 = time.perf_counter()
    page.goto(url)
    page.locator("h1", has_text="Does adaptive dual-scale denoising help?").wait_for()
    print(f"first render {time.perf_counter() - t0:.2f} s")
    page.get_by_text("Not enough paired runs").wait_for()  # the verdict's answer, below the intro
    idle(page)
    no_exception(page)
    main = page.inner_text('[data-testid="stMain"]')
    assert "Adaptive Dual-Scale Denoising" in main  # what the app is, on the first screen
    assert "Not enough paired runs" in main  # default = reference settings: the small runs do not count


def test_every_page_renders_with_the_test_runs(page):
    choose(page, "Dataset", "moons")
    open_advanced(page)
    for name, value in SMALL.items():
        set_number(page, LABELS[name], value)
    go(page, "Samples", "Samples")
    assert page.locator(".js-plotly-plot").count() == 2  # the animation is drawn when its expander opens
    page.get_by_text("Reverse process", exact=False).first.click()
    idle(page)
    animation = page.locator(".js-plotly-plot").nth(2)  # after the samples (a row, and stacked for phones)
    label = animation.locator("text.slider-label", has_text="denoiser input at")
    assert label.text_content() == "denoiser input at t = 99"  # starts from pure noise, alpha(t)'s timesteps
    animation.locator(".updatemenu-button", has_text="Play").click()
    wait_until(lambda: label.text_content() == "denoiser input at x0 (data)", 90, "the animation to reach the data")
    # Pause sits above the panels, the slider below them: they never overlap, at any width
    page.set_viewport_size(PHONE)
    laid_out(page, lambda: not page.locator(".js-plotly-plot").nth(0).is_visible(), "the row of three 100-px panels hidden")

    def stacked_full_width():
        stacked = page.locator(".js-plotly-plot").nth(1).bounding_box()
        return stacked["width"] > 300 and stacked["height"] > 900
    laid_out(page, stacked_full_width, "the panels one above the other, full width")

    def pause_clear_of_slider():
        pause = animation.locator(".updatemenu-button", has_text="Pause").bounding_box()
        rail = animation.locator(".slider-rail-rect").bounding_box()
        return pause["y"] + pause["height"] <= rail["y"] or rail["y"] + rail["height"] <= pause["y"]
    laid_out(page, pause_clear_of_slider, "Pause clear of the slider")
    page.set_viewport_size(DESKTOP)
    go(page, "alpha(t)", "alpha(t)")
    page.locator(".js-plotly-plot").nth(1).wait_for()  # alpha(t) curves + loss curves
    go(page, "Schedules", "Noise schedules")
    page.locator(".js-plotly-plot").nth(2).wait_for()  # abar/SNR curves (side by side, stacked) + the start-KL bars
    page.get_by_text("Not enough paired runs of two schedules").wait_for()  # the study, after the figures
    wide, narrow = page.locator(".st-key-wide_schedule_curves"), page.locator(".st-key-narrow_schedule_curves")
    assert wide.is_visible() and not narrow.is_visible()
    page.set_viewport_size(PHONE)  # a phone: the two panels one above the other
    narrow.wait_for(state="visible")
    assert not wide.is_visible()

    def titles_stacked_on_screen():
        titles = [narrow.locator(".g-gtitle, .annotation-text", has_text=t).bounding_box() for t in ("abar(t)", "SNR(t)")]
        return (titles[0]["y"] + titles[0]["height"] <= titles[1]["y"]  # one above the other, never overprinted
                and all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in titles))
    laid_out(page, titles_stacked_on_screen, "abar(t) above SNR(t), both within 390 px")
    laid_out(page, lambda: page.evaluate("document.documentElement.scrollWidth") <= 390, "nothing wider than 390 px")
    page.set_viewport_size(DESKTOP)
    go(page, "Train", "Train")
    assert page.get_by_text("loaded instantly").count() == 1  # moons adaptive seed 0 is stored
    go(page, "Results", "Results")
    assert f"{len(RUNS)} runs with the sidebar's training settings" in page.inner_text('[data-testid="stMain"]')
    page.locator('[data-testid="stDataFrame"]').nth(2).wait_for()  # all three tables now
    assert not page.locator(".compact-table").first.is_visible()  # wide screen: the full tables only
    page.set_viewport_size(PHONE)  # a phone: compact tables that fit, nothing sideways
    page.locator(".compact-table").first.wait_for(state="visible")
    assert not page.locator('[data-testid="stDataFrame"]').first.is_visible()
    laid_out(page, lambda: all(box["x"] >= 0 and box["x"] + box["width"] <= 390 for box in
                               (page.locator(".compact-table").nth(i).bounding_box() for i in range(3))),
             "the three compact tables within 390 px")
    laid_out(page, lambda: page.evaluate("document.documentElement.scrollWidth") <= 390, "nothing wider than 390 px")
    page.set_viewport_size(DESKTOP)
    go(page, "Verdict", "Does adaptive")
    page.locator(".js-plotly-plot").first.wait_for()  # the forest plot of the paired seeds
    assert "**moons**" not in page.inner_text('[data-testid="stMain"]')  # Markdown rendered, not shown raw
    assert "moons, adaptive − baseline (2 seeds)" in page.inner_text('[data-testid="stMain"]')
    page.set_viewport_size(PHONE)  # a phone: the words are there and on screen
    sentence = page.locator('[data-testid="stMarkdownContainer"]', has_text="moons, adaptive − baseline (2 seeds)").first
    assert "undecided" in sentence.inner_text()
    laid_out(page, lambda: (box := sentence.bounding_box())["x"] >= 0 and box["x"] + box["width"] <= 390,
             "the sentence within 390 px")
    laid_out(page, lambda: page.evaluate("document.documentElement.scrollWidth") <= 390, "nothing wider than 390 px")
    page.set_viewport_size(DESKTOP)


def test_impossible_setting_is_refused_with_a_message(page):
    set_number(page, "Training steps", 0)
    error = page.locator('[data-testid="stSidebar"] [data-testid="stAlert"]')
    error.wait_for()
    assert "steps must be in 1.." in error.inner_text()
    go(page, "Train", "Train")
    assert page.get_by_role("button", name="Start training").count() == 0
    assert "Cannot train with these settings" in page.inner_text('[data-testid="stMain"]')
    set_number(page, "Training steps", LIVE.steps)
    wait_until(lambda: error.count() == 0, 30, "the error to go away", page)


def test_a_short_run_trains_live_survives_a_reload_and_finishes(server, page):
    url, root = server
    set_number(page, "Seed", LIVE.seed)
    wait_until(lambda: LIVE.run_id in page.inner_text('[data-testid="stMain"]'), 30, "the new seed's run id", page)
    page.get_by_role("button", name="Start training").click()
    first = wait_until(lambda: progress_step(page), 60, "the first progress", page)
    assert first[1] == LIVE.steps
    later = wait_until(lambda: (s := progress_step(page)) and s[0] > first[0] and s, 60,
                       "progress to advance", page)
    assert later[0] > first[0]
    # Live charts: the loss so far and, for an adaptive run, its alpha(t) preview.
    wait_until(lambda: page.locator(".js-plotly-plot").count() >= 2, 60, "the live charts", page)
    no_exception(page)

    page.reload()  # a new browser session: the run must still be there
    page.locator("h1", has_text="Train").wait_for()
    wait_until(lambda: LIVE.run_id in page.inner_text('[data-testid="stMain"]'), 20,
               "the running run after the reload", page)
    after = wait_until(lambda: progress_step(page), 30, "progress after the reload", page)
    assert after[0] >= later[0] and after[1] == LIVE.steps
    no_exception(page)

    wait_until(lambda: Store(root).find(LIVE) is not None, 120, "the run to be stored", page)
    page.reload()  # finished while nobody watched: Recent runs (from the store) still tells
    page.get_by_text("Nothing is training right now.").wait_for(timeout=TIMEOUT_MS)
    recent = page.locator('[data-testid="stMarkdownContainer"] li', has_text=LIVE.run_id).first
    recent.wait_for()
    assert "done" in recent.inner_text()
    no_exception(page)


def test_a_cancel_one_second_after_start_cancels_and_the_page_never_contradicts_itself(server, page):
    """Issue 27: a Cancel clicked a second after Start once did nothing, and for a few seconds
    "This configuration is training now" sat above "Nothing is training". The outcome stays after a reload."""
    _, root = server
    go(page, "Train", "Train")
    open_advanced(page)
    set_number(page, "Seed", 31)
    set_number(page, "Training steps", 20_000)  # long enough that only the cancel ends it
    main, stored = page.locator('[data-testid="stMain"]'), len(Store(root).runs())
    page.get_by_role("button", name="Start training").click()
    page.get_by_role("button", name="Cancel").wait_for()
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Cancel").click()
    cancelled = page.locator('[data-testid="stAlert"]', has_text="was cancelled")
    deadline = time.monotonic() + 60
    while not cancelled.count():
        text = main.inner_text()
        assert not ("training now" in text and "Nothing is training" in text), text[:1500]
        assert time.monotonic() < deadline, "no cancelled outcome 60 s after the Cancel click"
        page.wait_for_timeout(100)
    wait_until(lambda: not Store(root).active(), 30, "the worker to stop", page)
    assert len(Store(root).runs()) == stored  # nothing was stored
    page.reload()
    page.locator("h1", has_text="Train").wait_for()
    page.locator('[data-testid="stAlert"]', has_text="was cancelled").wait_for()  # the outcome survives a reload
    open_advanced(page)
    set_number(page, "Training steps", SMALL["steps"])
    no_exception(page)


def test_add_seeds_queues_what_it_said_and_a_cancel_reads_as_cancelled(server, page):
    """Type 1 and click at once (the old button queued 60 runs that way): the plan shown is the one
    queued, its runs are the ones that start, and a cancel says so."""
    _, root = server
    go(page, "Verdict", "Does adaptive")
    open_advanced(page)
    set_number(page, "Training steps", 20_000)  # runs long enough to cancel
    box = page.get_by_label("Seeds per round", exact=True)
    box.fill("1")
    page.get_by_role("button", name="Plan one round").click()  # no Enter: the click must take the typed 1
    idle(page)
    notice = page.locator('[data-testid="stAlert"]', has_text="This queues").first
    notice.wait_for()
    m = re.search(r"This queues (\d+) runs", notice.inner_text())
    assert m and int(m[1]) == 12, notice.inner_text()  # 4 datasets x 3 variants x 1 seed, not x 5
    assert "seed 0" in notice.inner_text() and "min" in notice.inner_text()
    page.get_by_role("button", name="Confirm: queue 12 runs").click()
    bar = page.locator('[data-testid="stProgress"]', has_text="Adding seeds")
    bar.wait_for()
    assert "of 12 runs done" in bar.inner_text()
    wait_until(lambda: Store(root).active(), 60, "the first run to start", page)
    page.get_by_role("button", name="Cancel").click()
    cancelled = page.locator('[data-testid="stAlert"]', has_text="Cancelled:")
    cancelled.wait_for()
    assert "0 of 12 runs had finished" in cancelled.inner_text() and "The sweep is done" not in page.inner_text("body")
    wait_until(lambda: not Store(root).active(), 30, "the workers to stop", page)
    page.get_by_role("button", name="Dismiss").click()
    idle(page)
    set_number(page, "Training steps", SMALL["steps"])
    no_exception(page)


def test_csv_download_has_one_row_per_run(server, page):
    _, root = server
    go(page, "Results", "Results")
    with page.expect_download() as info:
        page.get_by_role("button", name=re.compile("Download metrics CSV")).click()
    frame = pd.read_csv(io.StringIO(Path(info.value.path()).read_text()))
    assert len(frame) == len(RUNS) + 1 == len(Store(root).runs())
    fields = [f for f in TrainConfig().to_dict()]
    named = [f"{m}_{spec.unit}" if spec.unit else m for m, spec in METRICS.items()]  # units in the names
    assert set(fields + named + ["run_id", "origin", "machine", "stacked"]) <= set(frame.columns)
    assert "kl_divergence_bits" in named and "training_time_s" in named
    row = frame.set_index("run_id").loc[LIVE.run_id]
    assert (row.steps, row.seed, row.dataset, row.variant) == (LIVE.steps, 5, "moons", "adaptive")
    assert frame[named].notna().all().all()
    no_exception(page)


def test_your_data_uploads_a_csv_trains_the_three_variants_and_joins_the_sidebar(server, page, tmp_path):
    import numpy as np

    from dualscale import userdata

    _, root = server
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    csv = tmp_path / "ring.csv"
    csv.write_text("x,y\n" + "\n".join(f"{np.cos(a) * 10:.4f},{np.sin(a) * 10:.4f}" for a in t))
    name = userdata.name_of(userdata.read_csv(csv), "ring.csv")
    go(page, "Your data", "Your data")
    bad = tmp_path / "one.csv"
    bad.write_text("x\n1\n2\n")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(bad))
    error = page.locator('[data-testid="stAlert"]', has_text="one.csv: expected two columns x, y; line 2 has 1")
    error.wait_for()  # one line, nothing stored
    assert not (root / "data").exists() or not any((root / "data").iterdir())
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(csv))
    page.get_by_text(f"{name}: 40 points, as it will be trained").wait_for()
    page.get_by_role("button", name="Train the three variants").click()
    page.get_by_role("button", name="Confirm: queue 3 runs").click()
    page.locator('[data-testid="stAlert"]', has_text=f"Queued 3 runs on {name}").wait_for()
    wait_until(lambda: sum(r.config.dataset == name for r in Store(root).runs()) == 3, 240, "the three runs", page)
    page.reload()
    page.locator("h1", has_text="Your data").wait_for()
    box = page.get_by_role("combobox", name="Dataset", exact=True)
    box.click()
    page.get_by_role("option", name=f"{name} (your data)", exact=True).wait_for()
    page.keyboard.press("Escape")
    no_exception(page)


def test_drawing_points_on_the_pad_makes_a_cloud(page):
    """The drawing pad is driven by a real drag of the mouse (a box selection over Plotly's points)."""
    go(page, "Your data", "Your data")
    page.get_by_text("drawing", exact=True).click()
    idle(page)
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for()
    drag_box(page, plot, 0.3, 0.3, 0.25, 0.1)
    caption = page.get_by_text(re.compile(r"\d+ points drawn")).first
    wait_until(lambda: int(caption.inner_text().split()[0]) >= 10, 30, "the drawn points", page)
    page.get_by_text(re.compile(r"drawn-[0-9a-f]{12}: \d+ points, as it will be trained")).wait_for()
    page.get_by_role("button", name="Clear the drawing").click()
    idle(page)
    no_exception(page)


LABELS = {"steps": "Training steps", "batch_size": "Batch size", "n_points": "Training points",
          "n_samples": "Samples for evaluation"}


def test_settings_in_the_address_survive_a_reload(server, page):
    url, _ = server
    cfg = TrainConfig(dataset="moons", variant="fixed", seed=3, steps=500)
    page.goto(f"{url}/train?dataset=moons&variant=fixed&seed=3&steps=500")
    page.locator("h1", has_text="Train").wait_for()
    wait_until(lambda: cfg.run_id in page.inner_text('[data-testid="stMain"]'), 30, "the address's run id", page)
    page.reload()
    page.locator("h1", has_text="Train").wait_for()
    wait_until(lambda: cfg.run_id in page.inner_text('[data-testid="stMain"]'), 30, "the run id after a reload", page)
    assert "steps=500" in page.url and "seed=3" in page.url
    no_exception(page)


def test_a_bad_address_value_is_a_notice_not_an_exception(server, page):
    url, _ = server
    page.goto(f"{url}/?seed=%C2%B2")  # ?seed=²
    page.locator("h1", has_text="Does adaptive").wait_for()
    idle(page)
    no_exception(page)
    notice = page.locator('[data-testid="stSidebar"] [data-testid="stAlert"]')
    notice.wait_for()
    assert "seed must be a whole number" in notice.inner_text()


def _no_live_markup(page) -> None:
    """No alert holds a link or an image: text from outside is shown as written."""
    alerts = page.locator('[data-testid="stAlert"]')
    assert alerts.locator("a").count() == 0 and alerts.locator("img").count() == 0


def test_markdown_from_strangers_is_shown_as_text(server, page, tmp_path):
    """Issue 26: an address, a store folder's name and a CSV's contents are a stranger's text; none
    becomes a live link or an image (and so none is fetched)."""
    url, root = server
    evil = tmp_path / "p.csv"
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if urllib.parse.urlparse(r.url).hostname == "evil.example" else None)
    page.goto(f"{url}/?variant=%5Bclick%20here%20to%20re-verify%5D(https://evil.example/login)"
              "&beta_schedule=!%5Bx%5D(https://evil.example/pixel.png)")
    page.locator("h1", has_text="Does adaptive").wait_for()
    idle(page)
    notice = page.locator('[data-testid="stMain"] [data-testid="stAlert"]', has_text="click here to re-verify")
    notice.first.wait_for()
    assert "[click here to re-verify](https://evil.example/login)" in notice.first.inner_text()
    _no_live_markup(page)
    folder = root / "**bold** [click me](https:evil.example)"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    try:
        page.goto(url)
        page.locator("h1", has_text="Does adaptive").wait_for()
        idle(page)
        page.locator('[data-testid="stAlert"]', has_text="**bold** [click me](https:evil.example)").first.wait_for()
        _no_live_markup(page)
    finally:
        shutil.rmtree(folder)
    go(page, "Your data", "Your data")
    evil.write_text("x,y\n![x](https://evil.example/p.png),2\n1,2\n")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(evil))
    page.locator('[data-testid="stAlert"]', has_text="![x](https://evil.example/p.png)").first.wait_for()
    _no_live_markup(page)
    assert fetched == []
    no_exception(page)
