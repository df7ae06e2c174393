"""The Samples page (issue 27): fresh samples from another start noise x_T and in fewer steps, the
particles' paths in the reverse-process animation, and (in headless Chromium at 390 x 844) the
three stacked phone panels each drawing their points.

AppTest against the small test store first (seconds); the browser test last, skipped where there
is no Chromium or Playwright.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from support import ROOT, SMALL, copy_store, figure, small_config, values  # first: dualscale sets torch's OpenMP wait policy
from dualscale import Store
from dualscale.diffusion import sample
from dualscale.plots import trajectory_animation
from dualscale.train import make_schedule

import torch  # noqa: E402

VARIANTS = ("baseline", "fixed", "adaptive")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The page samples in this process: one torch thread, as the store was built (two threads on
    two busy cores spin-wait, measured 5-8x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def open_samples(root, monkeypatch, dataset="moons") -> AppTest:
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    for name, value in SMALL.items():
        at.number_input(key=f"cfg_{name}").set_value(value)
    at.selectbox(key="cfg_dataset").set_value(dataset)
    ok(at.run())
    return ok(at.switch_page("views/samples.py").run())


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def points(fig: dict, name: str) -> np.ndarray | None:
    traces = [t for t in fig["data"] if t.get("name") == name]
    return np.stack([values(traces[0]["x"]), values(traces[0]["y"])], 1) if traces else None


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def respaced_reference(model, schedule, n: int, seed: int, steps: int) -> np.ndarray:
    """Ho et al. Algorithm 2 in its own eps form, x_{t-1} = (x_t - beta/sqrt(1 - abar) eps)/sqrt(1 - beta)
    + sigma z, on the respaced schedule of `steps` evenly spaced timesteps (T-1 and 0 included),
    in float64: an independent writing of what the page's strided sampler must compute."""
    taus = np.unique(np.linspace(0, schedule.timesteps - 1, steps).round().astype(int))[::-1]
    abar = schedule.alphas_cumprod.double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g).double()
    tables = model.tables()
    with torch.inference_mode():
        for i, t in enumerate(taus):
            last = i + 1 == len(taus)
            a_prev = torch.tensor(1.0, dtype=torch.float64) if last else abar[taus[i + 1]]
            beta = 1 - abar[t] / a_prev
            eps = model(x.float(), int(t), tables).double()
            x = (x - beta / (1 - abar[t]).sqrt() * eps) / (1 - beta).sqrt()
            if not last:
                x = x + (beta * (1 - a_prev) / (1 - abar[t])).sqrt() * torch.randn(n, 2, generator=g).double()
    return x.float().numpy()


# ------------------------------------------------------------------------------- fresh samples

def test_fresh_samples_follow_the_start_noise_seed_and_the_steps(small_store, monkeypatch):
    at = open_samples(small_store, monkeypatch)
    stored = points(figure(at, "samples_scatter"), "baseline samples")
    fresh = at.toggle(key="samples_fresh")
    assert not fresh.value and not fresh.proto.disabled
    assert not [w for w in at.number_input if w.key == "samples_seed"]  # off: the stored samples, no controls
    fresh.set_value(True)
    ok(at.run())
    steps = at.selectbox(key="samples_steps")
    assert steps.options == ["100 (the trained schedule)", "50", "25", "10"] and steps.value == 100
    assert at.number_input(key="samples_seed").value == 0

    runs = {v: Store(small_store).find(small_config("moons", v, 0)) for v in VARIANTS}
    models = {v: (r.load_model("ema"), make_schedule(r.config)) for v, r in runs.items()}
    n = SMALL["n_samples"]  # under the page's 2,000: every point is resampled
    # 100 steps: diffusion.sample itself, from the x_T that seed 0 draws
    full = {v: points(figure(at, "samples_scatter"), f"{v} samples") for v in VARIANTS}
    for v, (model, schedule) in models.items():
        np.testing.assert_array_equal(full[v], sample(model, schedule, n, torch.Generator().manual_seed(0))[0])
    assert not np.array_equal(full["baseline"], stored)
    assert "denoised in **100 steps**: the trained schedule" in texts(at.markdown)

    steps.set_value(10)
    ok(at.run())
    ten = {v: points(figure(at, "samples_scatter"), f"{v} samples") for v in VARIANTS}
    for v, (model, schedule) in models.items():
        assert not np.allclose(ten[v], full[v])
        np.testing.assert_allclose(ten[v], respaced_reference(model, schedule, n, 0, 10), atol=1e-4)
    stacked = points(figure(at, "samples_stacked"), "adaptive samples")
    np.testing.assert_array_equal(stacked, ten["adaptive"])  # the phone's panels are redrawn too
    assert "denoised in **10 steps**: 10 of the 100 trained timesteps" in texts(at.markdown)

    at.number_input(key="samples_seed").set_value(7)
    ok(at.run())
    seven = points(figure(at, "samples_scatter"), "fixed samples")
    assert not np.allclose(seven, ten["fixed"])
    np.testing.assert_allclose(seven, respaced_reference(*models["fixed"], n, 7, 10), atol=1e-4)
    assert "the x_T that seed 7 draws" in texts(at.markdown)

    at.toggle(key="samples_fresh").set_value(False)  # back: the stored samples
    ok(at.run())
    np.testing.assert_array_equal(points(figure(at, "samples_scatter"), "baseline samples"), stored)


def test_light_and_damaged_runs_say_they_cannot_be_resampled(small_store, tmp_path, monkeypatch):
    import shutil

    root = copy_store(small_store, tmp_path / "store")
    store = Store(root)
    for dataset, variant in (("moons", "fixed"), ("circle", "adaptive")):  # light copies only
        run = store.find(small_config(dataset, variant, 0))
        store.save_light(run, root=root / "reference")
        shutil.rmtree(run.path)
    baseline = store.find(small_config("moons", "baseline", 0))
    (baseline.path / "weights.npz").write_bytes(b"truncated")

    at = open_samples(root, monkeypatch)
    assert "**fixed** is a light run: shipped without weights, so it cannot be resampled" in texts(at.caption)
    at.toggle(key="samples_fresh").set_value(True)
    ok(at.run())
    at.selectbox(key="samples_steps").set_value(10)
    ok(at.run())
    scatter = figure(at, "samples_scatter")
    notes = [a["text"] for a in scatter["layout"]["annotations"]]
    assert "light run: no weights to resample" in notes and "weights do not load: not resampled" in notes
    assert points(scatter, "fixed samples") is None and points(scatter, "baseline samples") is None
    assert points(scatter, "adaptive samples") is not None
    stacked_notes = [a["text"] for a in figure(at, "samples_stacked")["layout"]["annotations"]]
    assert "light run: no weights to resample" in stacked_notes
    (warning,) = [w.value for w in at.warning if "cannot be resampled" in w.value]
    assert f"baseline: run {baseline.id} cannot be resampled: " in warning and "\n" not in warning

    at.selectbox(key="cfg_dataset").set_value("circle")  # its only run is light: nothing to resample
    ok(at.run())
    assert at.toggle(key="samples_fresh").proto.disabled
    assert "All the runs shown are light runs: shipped without weights, so they cannot be resampled" in \
        texts(at.caption)
    assert not [s for s in at.selectbox if s.key == "samples_steps"]
    assert points(figure(at, "samples_scatter"), "adaptive samples") is not None  # the stored ones


# ------------------------------------------------------------------------------- paths

def test_the_animation_draws_particle_paths_up_to_each_frame(small_store, monkeypatch):
    at = open_samples(small_store, monkeypatch)
    at.session_state["samples_reverse"] = True  # the expander opened
    ok(at.run())
    anim = figure(at, "samples_trajectory")
    names = [t.get("name") for t in anim["data"]]
    for v in VARIANTS:
        assert names.index(f"{v} paths") < names.index(v)  # the points drawn over their paths
    moving = anim["frames"][0]["traces"]
    assert [anim["data"][i]["name"] for i in moving] == [n for v in VARIANTS for n in (f"{v} paths", v)]
    traj = {v: Store(small_store).find(small_config("moons", v, 0)).trajectory() for v in VARIANTS}
    frame_ts = [int(f["name"]) for f in anim["frames"]]
    for k, frame in enumerate(anim["frames"]):
        by_name = {t["name"]: t for t in frame["data"]}
        for v in VARIANTS:
            way = np.stack([values(by_name[f"{v} paths"]["x"]), values(by_name[f"{v} paths"]["y"])], 1)
            way = way.reshape(20, k + 2, 2)  # 20 paths: x_T and every frame up to this one, then a gap
            assert np.isnan(way[:, -1]).all() and not np.isnan(way[:, :-1]).any()
            ts, pts = traj[v]
            expected = np.stack([pts[list(ts).index(t), :20] for t in frame_ts[:k + 1]], 1)
            np.testing.assert_allclose(way[:, :-1], expected, atol=1e-6)
            heads = np.stack([values(by_name[v]["x"]), values(by_name[v]["y"])], 1)[:20]
            np.testing.assert_allclose(way[:, -2], heads)  # each path ends at its point in this frame


def test_paths_keep_the_animation_small_and_skip_missing_panels():
    ts = np.arange(100, -1, -1)
    traj = np.random.default_rng(0).normal(size=(101, 1000, 2))
    fig = trajectory_animation(np.zeros((10, 2)), {"a": (ts, traj), "b": None})
    by_name = {t.name: t for t in fig.frames[-1].data}
    assert len(by_name["a paths"].x) == 20 * (35 + 1) and len(by_name["b paths"].x) == 0
    three = trajectory_animation(np.zeros((10, 2)), {k: (ts, traj) for k in "abc"})
    assert len(three.to_json()) < 1_450_000  # 0.80 MB without the paths, +~0.19 MB per panel with 20
    none = trajectory_animation(np.zeros((10, 2)), {"a": (ts, traj)}, n_paths=0)
    assert all(len(t.x) == 0 for f in none.frames for t in f.data if t.name == "a paths")


# ------------------------------------------------------------------------------- browser, 390 x 844

PHONE = {"width": 390, "height": 844}
COLORS = {"baseline": 2, "fixed": 0, "adaptive": 1}  # each variant's strongest channel: blue, red (orange), green


@pytest.fixture(scope="module")
def browser_page(small_store, tmp_path_factory):
    """A streamlit server on a copy of the small store and a Chromium page at 390 x 844."""
    import test_browser as tb  # skips (module level) without Chromium or Playwright

    from support import stop_workers

    root = copy_store(small_store, tmp_path_factory.mktemp("samples_browser") / "store")
    port = tb.free_port()
    with open(root.parent / "streamlit.log", "wb") as log:
        proc = tb.start_server(root, port, log)
        try:
            url = f"http://127.0.0.1:{port}"
            tb.wait_healthy(url, proc)
            with tb.sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=tb.CHROMIUM, headless=True, args=tb.CHROMIUM_ARGS)
                context = browser.new_context(viewport=PHONE)
                context.set_default_timeout(tb.TIMEOUT_MS)
                yield tb, url, context.new_page()
                browser.close()
        finally:
            stop_workers(root)
            proc.terminate()
            proc.wait(15)


def panel_pixels(page, area, path) -> dict:
    """What the window shows of one panel's plot area, scrolled to its middle (clear of the page's
    fixed header): a screenshot of the window, not of the element (Streamlit scrolls its main area,
    not the document, and a screenshot of anything taller than the window comes out blank below its
    edge; a clipped one also draws the page afresh, which hid the defect). Its coloured pixels are
    samples (the data is grey); also their spread over the panel, as a fraction of its size."""
    from PIL import Image

    area.evaluate("e => e.scrollIntoView({block: 'center'})")
    box = area.bounding_box()
    window = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    top, left = max(int(round(box["y"])), 0), max(int(round(box["x"])), 0)
    shot = window[top:int(box["y"] + box["height"]), left:int(box["x"] + box["width"])]
    Image.fromarray(shot.astype(np.uint8)).save(path)
    coloured = (shot.max(2) - shot.min(2)) > 60
    ys, xs = np.nonzero(coloured)
    return {"box": box, "count": int(coloured.sum()),
            "channel": int(np.argmax(shot[coloured].sum(0))) if len(ys) else None,
            "spread": max(np.ptp(xs) / shot.shape[1], np.ptp(ys) / shot.shape[0]) if len(ys) else 0.0}


def stacked_panels_draw(tb, page, out, tag: str) -> dict:
    """Each stacked panel on screen, as a user scrolls back up to it from the reverse process below
    (the lowest panel first: it was off screen when the figure was drawn)."""
    stacked = page.locator(".st-key-narrow_samples .js-plotly-plot")
    stacked.wait_for(state="visible")
    assert not page.locator(".st-key-wide_samples .js-plotly-plot").is_visible()  # the row: hidden at 390 px
    areas = stacked.locator(".nsewdrag")
    tb.wait_until(lambda: areas.count() == 3, 90, "three stacked panels", page)
    if page.locator(".js-plotly-plot").count() < 3:  # the reverse process opens on a click
        page.get_by_text("Reverse process", exact=False).first.click()
        tb.idle(page)
    page.locator(".js-plotly-plot").nth(2).evaluate("e => e.scrollIntoView({block: 'center'})")  # the animation

    def drawn():
        found = {v: panel_pixels(page, areas.nth(i), str(out / f"{tag}-{v}.png"))
                 for i, v in reversed(list(enumerate(VARIANTS)))}
        return found if all(f["count"] > 300 and f["spread"] > 0.5 for f in found.values()) else None

    found = tb.wait_until(drawn, 90, f"every stacked panel to draw its points ({tag})", page)
    for v, f in found.items():
        box = f["box"]
        assert box["y"] >= -1 and box["y"] + box["height"] <= PHONE["height"] + 1  # checked where it is on screen
        assert abs(box["width"] - box["height"]) < 3  # square: a circle looks like a circle
        assert f["channel"] == COLORS[v], (v, f)  # this variant's colour, not another panel's
    return found


def test_the_stacked_phone_panels_each_draw_their_points(browser_page, tmp_path):
    tb, url, page = browser_page
    query = "&".join(f"{k}={v}" for k, v in SMALL.items())
    # A window narrowed past the 640 px switch (a phone turned): the stacked figure was first laid
    # out hidden, at another size, and must not come out zoomed out, its points small in the middle.
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{url}/samples?dataset=moons&{query}")
    page.locator("h1", has_text="Samples").wait_for()
    tb.idle(page)
    tb.no_exception(page)
    page.locator(".st-key-wide_samples .js-plotly-plot").wait_for(state="visible")
    page.set_viewport_size(PHONE)
    narrowed = stacked_panels_draw(tb, page, tmp_path, "narrowed")
    page.reload()  # and opened at 390 x 844 from the start
    page.locator("h1", has_text="Samples").wait_for()
    tb.idle(page)
    tb.no_exception(page)
    loaded = stacked_panels_draw(tb, page, tmp_path, "loaded")
    for v in VARIANTS:
        assert narrowed[v]["spread"] == pytest.approx(loaded[v]["spread"], abs=0.05)
    # The reverse process at its last frame: every panel draws its 20 paths, one line each.
    animation = page.locator(".js-plotly-plot").nth(2)
    label = animation.locator("text.slider-label", has_text="denoiser input at")
    animation.locator(".updatemenu-button", has_text="Play").click()
    tb.wait_until(lambda: label.text_content() == "denoiser input at x0 (data)", 90, "the animation to reach the data")
    for sub in ("xy", "x2y2", "x3y3"):
        lines = animation.locator(f".subplot.{sub} .scatterlayer path.js-line")
        assert lines.count() == 20, (sub, lines.count())
    tb.no_exception(page)
