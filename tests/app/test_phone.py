"""Issue 27: the dashboard on a phone (390 x 844), in a real browser: `streamlit run app.py` driven by
Playwright on headless Chromium, against a copy of the small test store (the pattern and helpers of
test_browser.py). Where it is cheap, the same check at 1440 x 900.

- Inside: the three branch fields one above the other, their titles clear of each other and of
  Plotly's toolbar, none cut off; arrows scaled per panel, so that they are still arrows at t = 2.
- Legends and titles clear of the toolbar (Verdict's forest and path, Schedules, Inside, alpha(t));
  alpha(t)'s legend under the plot, not beside it.
- Results: the phone's compact tables keep the number of runs per row.
- Train: while something trains, its live card comes before the stored run's panel.
"""
from __future__ import annotations

import itertools
import math
import re

import pytest

from support import SMALL, small_config, stop_workers, wait_until
from dualscale import Store
from test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, idle, laid_out, no_exception, serve, sync_api

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
# The small test runs' settings in the address: every page shows the small store's runs.
SETTINGS = "&".join(f"{k}={v}" for k, v in SMALL.items())
ADDRESS = f"dataset=moons&variant=adaptive&seed=0&{SETTINGS}"
TRAINING = small_config("moons", "adaptive", 9, steps=20_000)  # long enough to still run when cancelled


@pytest.fixture(scope="module")
def server(small_store, tmp_path_factory):
    yield from serve(small_store, tmp_path_factory.mktemp("phone"))


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=PHONE)
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()
        browser.close()


@pytest.fixture(autouse=True)
def phone(page):
    """Every test starts at a phone's size."""
    page.set_viewport_size(PHONE)


def open_page(page, url: str, path: str, title: str) -> None:
    page.goto(f"{url}/{path}?{ADDRESS}")
    page.locator("h1", has_text=title).wait_for()
    idle(page)
    no_exception(page)


# ------------------------------------------------------------------------------- geometry

# What a Plotly chart has drawn, in page pixels: its box, its toolbar's, its legend's, every
# annotation (subplot titles, notes) and layout title with its text, and its plot areas.
BOXES = """el => {
  const box = x => { const b = x.getBoundingClientRect(); return {x: b.x, y: b.y, width: b.width, height: b.height}; };
  const all = s => Array.from(el.querySelectorAll(s));
  return {
    plot: box(el),
    modebar: all('.modebar').map(box).find(b => b.width > 0) || null,
    legend: all('.legend').map(box).find(b => b.width > 0) || null,
    titles: all('.annotation-text, .g-gtitle text').map(x => ({text: x.textContent, ...box(x)})).filter(b => b.width > 0),
    areas: all('.nsewdrag').map(box),
  };
}"""


def boxes(plot) -> dict:
    return plot.evaluate(BOXES)


def overlap(a: dict | None, b: dict | None, slack: float = 0.5) -> bool:
    """Whether two boxes share more than a hair."""
    if a is None or b is None:
        return False
    return (a["x"] + slack < b["x"] + b["width"] and b["x"] + slack < a["x"] + a["width"]
            and a["y"] + slack < b["y"] + b["height"] and b["y"] + slack < a["y"] + a["height"])


def inside_horizontally(b: dict, outer: dict, width: int) -> bool:
    """Not cut off: within the chart and within the window."""
    return (b["x"] >= max(outer["x"], 0) - 0.5 and b["x"] + b["width"] <= min(outer["x"] + outer["width"], width) + 0.5)


def clear_of_the_toolbar(plot, width: int) -> dict:
    """No title, note or legend of this chart under its toolbar, none cut off at the sides."""
    g = boxes(plot)
    for t in g["titles"]:
        assert not overlap(t, g["modebar"]), f"{t['text']!r} under the toolbar {g['modebar']}"
        assert inside_horizontally(t, g["plot"], width), f"{t['text']!r} cut off: {t} in {g['plot']}"
    assert not overlap(g["legend"], g["modebar"]), f"the legend {g['legend']} under the toolbar {g['modebar']}"
    if g["legend"]:
        assert inside_horizontally(g["legend"], g["plot"], width), f"the legend {g['legend']} cut off"
    return g


def visible_plots(page) -> list:
    plots = page.locator(".js-plotly-plot")
    return [plots.nth(i) for i in range(plots.count()) if plots.nth(i).is_visible()]


def resized(page, plot, size: dict) -> None:
    """Set the window's size and wait until the chart has been drawn to the new width."""
    page.set_viewport_size(size)
    page.wait_for_function("([el, w]) => { const b = el.querySelector('.main-svg').getBoundingClientRect().width; "
                           "return w < 640 ? b > 0 && b < w : b > 640; }", arg=[plot.element_handle(), size["width"]])


def arrow_lengths(plot) -> list[float]:
    """Per panel, the longest arrow drawn, in px: the arrows are a line trace per panel, each arrow
    a path 'M x,y L x,y' of it (the data behind them is WebGL, not SVG)."""
    traces = plot.locator(".scatterlayer .trace").evaluate_all(
        "ts => ts.map(t => Array.from(t.querySelectorAll('path.js-line')).map(p => p.getAttribute('d')))")
    longest = []
    for paths in filter(None, traces):
        best = 0.0
        for d in paths:
            for piece in filter(None, d.split("M")):
                pts = [tuple(map(float, p.split(","))) for p in re.findall(r"[-\d.]+,[-\d.]+", piece)]
                best = max(best, sum(math.dist(a, b) for a, b in zip(pts, pts[1:])))
        longest.append(best)
    return longest


# ------------------------------------------------------------------------------- Inside

def field_plot(page):
    """The branch field on screen (the one of the two, row or stack, that this width shows)."""
    return page.locator(".js-plotly-plot", has=page.locator(".annotation-text", has_text="their mix")) \
        .filter(visible=True).first


def check_field_titles(page, width: int) -> list[dict]:
    plot = field_plot(page)
    plot.wait_for()
    g = clear_of_the_toolbar(plot, width)
    titles = [next(t for t in g["titles"] if t["text"].startswith(name))
              for name in ("global branch", "local branch", "their mix")]
    for a, b in itertools.combinations(titles, 2):
        assert not overlap(a, b), f"{a['text']!r} and {b['text']!r} overprint: {a}, {b}"
    return titles


def test_inside_stacks_the_three_fields_on_a_phone_with_titles_clear_of_each_other_and_the_toolbar(server, page):
    url, _ = server
    open_page(page, url, "inside", "Inside the models")
    page.get_by_text(re.compile(r"^At t = 50, each arrow")).wait_for()  # the field is drawn
    def stacked():
        titles = check_field_titles(page, PHONE["width"])
        assert titles[0]["y"] < titles[1]["y"] < titles[2]["y"], titles  # one above the other
        return titles
    laid_out(page, stacked, "the three field titles one above the other, clear of each other and the toolbar")
    plot = field_plot(page)
    width = boxes(plot)["plot"]["width"]
    assert width > 300  # full width, not a third of it
    assert "scaled per panel" in page.inner_text('[data-testid="stMain"]')
    scales = plot.locator(".annotation-text", has_text="drawn ×")
    assert scales.count() == 3 and all(re.fullmatch(r"longest [\d.e+-]+, drawn ×[\d.e+-]+", s)
                                       for s in scales.all_text_contents())  # the scale under each panel
    page.set_viewport_size(DESKTOP)  # a wide window: the row of three, the same rules
    wide = page.locator(".st-key-wide_inside_field .js-plotly-plot")
    wide.wait_for(state="visible")
    def row():
        titles = check_field_titles(page, DESKTOP["width"])
        assert titles[0]["x"] < titles[1]["x"] < titles[2]["x"] and abs(titles[0]["y"] - titles[2]["y"]) < 2, titles
        return titles
    laid_out(page, row, "the three field titles in a row, clear of each other and the toolbar")


def test_inside_arrows_near_t_0_are_arrows_not_dots(server, page):
    """At t = 2 the predicted moves are about a hundredth of the plane (sqrt(1 - abar_2) ~ 0.02): drawn
    a fifth of the way they were fractions of a pixel. Scaled per panel, each panel's longest arrow
    spans most of the space between two arrows."""
    url, _ = server
    open_page(page, url, "inside", "Inside the models")
    page.get_by_text(re.compile(r"^At t = 50, each arrow")).wait_for()
    thumb = page.locator('[data-testid="stSlider"]', has_text="timestep t").get_by_role("slider")
    thumb.focus()
    thumb.press("Home")  # t = 0
    thumb.press("ArrowRight")
    thumb.press("ArrowRight")
    page.get_by_text(re.compile(r"^At t = 2, each arrow")).wait_for()
    idle(page)
    no_exception(page)
    plot = field_plot(page)
    page.wait_for_function("el => el.querySelectorAll('.scatterlayer path.js-line').length >= 3",
                           arg=plot.element_handle())
    longest = arrow_lengths(plot)
    assert len(longest) == 3 and min(longest) >= 8, longest  # px, on panels about 320 px wide


# ------------------------------------------------------------------------------- the toolbar

def test_legends_and_titles_stay_clear_of_the_toolbar(server, page):
    url, _ = server
    open_page(page, url, "", "Does adaptive")  # Verdict: the forest plot and an interval's path
    page.locator(".js-plotly-plot").nth(1).wait_for()
    charts = [("Verdict", p) for p in visible_plots(page)]
    assert len(charts) == 2
    for _, plot in charts:
        g = clear_of_the_toolbar(plot, PHONE["width"])
        assert g["legend"] is None or g["legend"]["y"] >= max(a["y"] + a["height"] for a in g["areas"]) - 0.5 \
            or g["legend"]["y"] + g["legend"]["height"] <= min(a["y"] for a in g["areas"]) + 0.5  # off the panels
    open_page(page, url, "schedules", "Noise schedules")
    page.locator(".js-plotly-plot").nth(2).wait_for()
    for plot in visible_plots(page):  # the curves stacked, the start-KL bars
        clear_of_the_toolbar(plot, PHONE["width"])
    open_page(page, url, "inside", "Inside the models")
    page.get_by_text(re.compile(r"^At t = 50, each arrow")).wait_for()
    for plot in visible_plots(page):  # where in t, the fields
        clear_of_the_toolbar(plot, PHONE["width"])


def test_alpha_legend_is_under_the_plot_not_beside_it(server, page):
    url, _ = server
    open_page(page, url, "alpha", "alpha(t)")
    plots = page.locator(".js-plotly-plot")
    plots.nth(1).wait_for()  # alpha(t), then the loss curves
    for size in (PHONE, DESKTOP):
        resized(page, plots.first, size)
        for plot in (plots.nth(0), plots.nth(1)):
            g = clear_of_the_toolbar(plot, size["width"])
            legend, area = g["legend"], g["areas"][0]
            assert legend is not None
            below = legend["y"] >= area["y"] + area["height"]
            assert below or legend["width"] <= 0.25 * g["plot"]["width"], (size, legend, g["plot"])
            assert area["width"] >= 0.7 * g["plot"]["width"]  # the axes keep the width (beside the legend: 42%)


# ------------------------------------------------------------------------------- Results

def test_results_on_a_phone_keep_the_runs_column(server, page):
    url, _ = server
    open_page(page, url, "results", "Results")
    tables = page.locator(".compact-table")
    tables.nth(2).wait_for(state="visible")  # baseline, fixed, adaptive
    for i in range(3):
        heads = tables.nth(i).locator("th").all_inner_texts()
        assert heads[:2] == ["dataset", "runs"], heads
    adaptive = {row.locator("td").nth(0).inner_text(): row.locator("td").nth(1).inner_text()
                for row in tables.nth(2).locator("tbody tr").all()}
    assert adaptive == {"moons": "2", "circle": "1"}  # the small store: 2 moons seeds, 1 circle
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # still nothing sideways


# ------------------------------------------------------------------------------- Train

def test_train_shows_the_live_card_before_the_stored_run(server, page):
    url, root = server
    page.goto(f"{url}/train?dataset=moons&variant=adaptive&seed={TRAINING.seed}&"
              + "&".join(f"{k}={getattr(TRAINING, k)}" for k in SMALL))
    page.locator("h1", has_text="Train").wait_for()
    page.get_by_text(TRAINING.run_id).first.wait_for()
    idle(page)
    page.get_by_role("button", name="Start training").click()
    try:
        wait_until(lambda: Store(root).active(), 90, "the run to start", page)
        # Another session (a new tab, a shared link) whose sidebar names a stored run: moons/adaptive seed 0
        open_page(page, url, "train", "Train")
        stored = page.locator('[data-testid="stAlert"]', has_text="Stored: loaded instantly")
        live = page.locator('[data-testid="stMain"] [data-testid="stProgress"]').first
        stored.wait_for()
        live.wait_for()
        assert TRAINING.run_id in page.inner_text('[data-testid="stMain"]')
        for size in (PHONE, DESKTOP):
            page.set_viewport_size(size)
            assert live.bounding_box()["y"] < stored.bounding_box()["y"], size
        heads = [h for h in page.locator('[data-testid="stMain"] h3').all_inner_texts() if h]
        assert heads.index("Runs in progress") < heads.index("Recent runs")
        page.set_viewport_size(PHONE)
        page.get_by_role("button", name="Cancel").first.click()
        wait_until(lambda: not Store(root).active(), 60, "the worker to stop", page)
        no_exception(page)
    finally:
        stop_workers(root)
