"""The dashboard through streamlit's AppTest: every page, against a small real store.

Also the two dashboard library modules it stands on: dualscale.runner (background runs, with real
worker processes) and dualscale.plots (tables and figures).
"""
from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from support import ROOT, RUNS, SMALL, copy_store, small_config, stop_workers, write_run_json
from dualscale.record import Record
from dualscale import METRICS, PAPER_TABLES, Store, TrainConfig
from dualscale.config import training_settings
from dualscale.paper import table
from dualscale.plots import marked_tables, smooth, trajectory_animation
from dualscale.runner import Runner, _Worker, summarize, worker_args


@pytest.fixture(scope="module")
def store_root(small_store):
    return small_store


@pytest.fixture
def app(store_root, monkeypatch):
    monkeypatch.setenv("DUALSCALE_STORE", str(store_root))
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def use_small_settings(at: AppTest, **extra) -> AppTest:
    """Type the test runs' settings into the sidebar's advanced expander."""
    for name, value in {**SMALL, **extra}.items():
        at.number_input(key=f"cfg_{name}").set_value(value)
    return ok(at.run())


def select(at: AppTest, dataset=None, variant=None, seed=None) -> AppTest:
    if dataset is not None:
        at.selectbox(key="cfg_dataset").set_value(dataset)
    if variant is not None:
        at.radio(key="cfg_variant").set_value(variant)
    if seed is not None:
        at.number_input(key="cfg_seed").set_value(seed)
    return ok(at.run())


def page(at: AppTest, name: str) -> AppTest:
    return ok(at.switch_page(f"views/{name}.py").run())


def figure(at: AppTest, which: int | str) -> dict:
    """The i-th Plotly chart on the page, or the one whose widget key is `which`."""
    charts = at.get("plotly_chart")
    if isinstance(which, str):
        charts = [c for c in charts if c.proto.id.endswith("-" + which)]
        assert len(charts) == 1, f"no single chart keyed {which!r}"
        which = 0
    return json.loads(charts[which].proto.spec)


def values(field) -> np.ndarray:
    """A trace's x or y: a list, or Plotly's base64 binary form {"bdata", "dtype"}."""
    if isinstance(field, dict):
        return np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"])
    return np.asarray(field)


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


# ------------------------------------------------------------------------------- Results

def test_results_page_compares_our_runs_with_the_paper(app, store_root):
    page(app, "results")
    assert [t.value for t in app.title] == ["Results"]
    assert len(app.get("download_button")) == 1
    # Default sidebar = the reference settings: none of the small test runs qualify, none is pooled in.
    assert f"0 runs with the sidebar's training settings (the reference settings); {len(RUNS)} runs with " \
           "other settings are left out" in texts(app.caption)
    use_small_settings(app)
    assert f"{len(RUNS)} runs with the sidebar's training settings" in texts(app.caption)
    adaptive = app.dataframe[2].value  # tables in order: baseline, fixed, adaptive, all runs
    assert adaptive.loc["moons", "runs"] == 2 and adaptive.loc["circle", "runs"] == 1
    assert list(adaptive.columns[:3]) == ["runs", "KL", "loss"]  # quality first, times after
    # 150-step runs: the paper's 10,000-step values are not set beside them
    assert not any("paper" in c for c in adaptive.columns)
    assert "The paper's values are not shown beside runs of other settings" in texts(app.caption)
    kls = [r.metrics["kl_divergence"] for r in Store(store_root).runs()
           if r.config.dataset == "moons" and r.config.variant == "adaptive"]
    half = 12.706205 * abs(kls[0] - kls[1]) / 2  # t(0.975, 1 df) * sd / sqrt(2), with sd = |difference| / sqrt(2)
    assert adaptive.loc["moons", "KL"] == f"{np.mean(kls):.3f} ± {half:.3f}"  # two seeds: mean ± 95% CI
    assert "dino" not in adaptive.index  # no runs there
    assert len(app.dataframe[3].value) == len(RUNS)


def test_results_stars_only_significant_differences(app):
    """Two seeds of baseline and adaptive on moons cannot make a winner: no ★ anywhere."""
    page(app, "results")
    use_small_settings(app)
    tables = [app.dataframe[i].value for i in range(3)]
    assert not any("★" in str(cell) for t in tables for cell in t.to_numpy().ravel())
    assert "★ = better than both other variants on that dataset in the Verdict's decision" in texts(app.caption)


def decided_store(root):
    """Twelve seeds of the three variants on line (light runs with constructed metrics): adaptive's
    KL is far below both others', fixed's eval loss above both; everything else equal."""
    rng = np.random.default_rng(5)
    store = Store(root)
    for seed in range(12):
        common = rng.normal(0, 0.003)
        for variant, kl, loss in (("baseline", 0.20, 0.800), ("fixed", 0.20, 0.806), ("adaptive", 0.10, 0.800)):
            config = small_config("line", variant, seed)
            metrics = {"training_time": 1.0, "inference_time": 0.1, "kl_divergence": kl + common + rng.normal(0, 0.003),
                       "eval_loss": loss + rng.normal(0, 0.0003)}
            store.save(config, Record(metrics, {"samples": np.zeros((10, 2), np.float32), "losses": np.ones(3, np.float32)}, None, {}))
    return root


def test_results_stars_are_the_primary_verdicts_better_cells(store_root, tmp_path, monkeypatch):
    from dualscale.stats import verdict_of, winners

    root = decided_store(copy_store(store_root, tmp_path / "store"))
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = use_small_settings(AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run())
    page(at, "results")
    starred = {(variant, dataset, column) for variant, t in zip(("baseline", "fixed", "adaptive"), at.dataframe[:3])
               for dataset, row in t.value.iterrows() for column, cell in row.items() if "★" in str(cell)}
    verdict = [c for c in verdict_of(Store(root).runs()).comparisons if c.settings and c.metric in ("kl_divergence", "eval_loss")]
    expected = {(v, d, METRICS[m].short) for (d, m), v in winners(verdict).items()}
    assert starred == expected == {("adaptive", "line", "KL")}  # fixed's loss is worse than both, not better
    line = {(c.a, c.b, c.metric): c.decision for c in verdict if c.dataset == "line"}
    assert line["adaptive", "baseline", "kl_divergence"] == line["adaptive", "fixed", "kl_divergence"] == "better"
    assert line["fixed", "baseline", "eval_loss"].startswith("worse")


def test_sidebar_says_which_controls_a_page_ignores(app):
    for name, ignored in (("results", "Dataset, variant and seed"), ("verdict", "Variant and seed"),
                          ("samples", "Variant"), ("alpha", "Variant (")):  # issue 27: Verdict's Add seeds uses the
        # dataset, alpha(t)'s loss curves the seed
        page(app, name)
        assert f"{ignored}" in texts(app.sidebar.caption) and "Not used on this page: " in texts(app.sidebar.caption)
    page(app, "train")
    assert "Not used on this page" not in texts(app.sidebar.caption)  # Train uses every control


def test_results_never_pools_runs_of_other_settings(app):
    page(app, "results")
    assert not app.toggle  # no switch that would average 150-step runs with 10,000-step ones
    use_small_settings(app, steps=151)
    assert "0 runs with the sidebar's training settings (steps 151, " in texts(app.caption)


# ------------------------------------------------------------------------------- Verdict

def test_verdict_page_opens_first_and_answers_with_intervals(app):
    assert [t.value for t in app.title] == ["Does adaptive dual-scale denoising help?"]
    assert "Not enough paired runs" in texts(app.info)  # the reference settings: no small run counts
    use_small_settings(app)
    words = texts(app.markdown)
    assert "**moons** (2 seeds): adaptive against baseline: not decided (" in words  # the answer first, with numbers
    assert "**moons**, adaptive − baseline (2 seeds): KL " in words and "undecided" in words
    forest = figure(app, 0)
    titles = [a["text"] for a in forest["layout"]["annotations"]]
    assert titles[0] == "KL Divergence (lower is better)" and any(t.startswith("Precision (higher") for t in titles)
    bar = forest["data"][0]
    assert list(bar["y"]) == [0, 0] and "seed 0:" in bar["hovertemplate"] and "seed 1:" in bar["hovertemplate"]
    assert "sequence interval [−∞, +∞]" in bar["hovertemplate"]  # 2 seeds pin nothing down yet
    assert any(s.get("type") == "rect" for s in forest["layout"]["shapes"])  # the margin band
    table = app.dataframe[0].value
    assert list(table.dataset) == ["moons"] * 5 and list(table.columns[:3]) == ["dataset", "metric", "decision"]
    assert {"sequence interval", "t-interval (descriptive)", "family"} <= set(table.columns)
    assert set(table.decision) == {"undecided"} and (table.n == 2).all()
    assert table.family.iloc[0] == "primary (12)"
    hint = "python -m dualscale settle --batch 5 --steps 150 --batch-size 128 --n-points 2000 --n-samples 500 --store "
    assert any(c.value.startswith(hint) for c in app.code)  # the hint carries the sidebar's settings and the store
    app.get("button_group")[0].set_value("adaptive − fixed")
    ok(app.run())  # one fixed seed: no pair
    assert "No paired seeds of adaptive and fixed" in texts(app.info) and not app.get("plotly_chart")


# ------------------------------------------------------------------------------- sidebar

def test_choices_persist_across_pages(app):
    select(app, dataset="moons", variant="baseline", seed=3)
    for name in ("train", "samples", "alpha", "results", "verdict"):
        page(app, name)
        sel = app.session_state["selection"]
        assert (sel.dataset, sel.variant, sel.seed) == ("moons", "baseline", 3), name
    page(app, "train")
    assert "moons · baseline · seed 3" in texts(app.markdown)


@pytest.mark.parametrize("name, value, message", [
    ("steps", 0, "steps must be in 1.."),
    ("lr", -0.001, "lr must be > 0"),
    ("batch_size", 5000, "exceeds n_points"),
    ("n_points", 10**12, "this run needs about"),  # refused before Start, not 3.7 s after it
])
def test_impossible_settings_are_refused_with_one_line(app, name, value, message):
    app.number_input(key=f"cfg_{name}").set_value(value)
    if name == "batch_size":
        app.number_input(key="cfg_n_points").set_value(1000)
    ok(app.run())
    errors = [e.value for e in app.sidebar.error]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]
    page(app, "train")
    assert any(message in e.value for e in app.main.error)
    assert "Start training" not in [b.label for b in app.button]
    for name_ in ("samples", "alpha", "results"):
        page(app, name_)  # the other pages still draw (with the reference settings)


def test_advanced_widgets_are_generated_from_the_config_fields(app):
    """Every training setting has its widget, labelled and defaulted from its TrainConfig field."""
    for f in training_settings():
        kind = "selectbox" if f.metadata["choices"] is not None else "number_input"
        widget = getattr(app, kind)(key=f"cfg_{f.name}")
        assert widget.label == f.metadata["label"] and widget.value == f.default, f.name
        if kind == "selectbox":
            assert list(widget.options) == list(f.metadata["choices"])


def test_reset_restores_reference_defaults(app):
    use_small_settings(app, lr=0.01)
    assert app.session_state["selection"].config.steps == SMALL["steps"]
    next(b for b in app.button if b.label == "Reset to reference defaults").click()
    ok(app.run())
    assert app.session_state["selection"].config == TrainConfig(dataset="dino", variant="adaptive")
    assert app.number_input(key="cfg_lr").value == pytest.approx(3e-4)


# ------------------------------------------------------------------------------- Train

def test_train_page_loads_a_stored_config_instantly_and_offers_retrain(app):
    use_small_settings(app)
    select(app, dataset="moons", variant="adaptive", seed=0)
    page(app, "train")
    assert "loaded instantly" in texts(app.success)
    labels = [b.label for b in app.button]
    assert "Retrain" in labels and "Start training" not in labels
    assert len(app.get("plotly_chart")) == 1  # its loss curve
    select(app, seed=7)  # not stored: offer to train it
    labels = [b.label for b in app.button]
    assert "Start training" in labels and "Retrain" not in labels
    assert "Nothing is training right now." in texts(app.caption)


def wait_for(predicate, timeout=60.0, every=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def test_train_page_starts_watches_and_cancels_a_worker(store_root, tmp_path, monkeypatch):
    root = copy_store(store_root, tmp_path / "store")
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    use_small_settings(at, steps=20_000)  # long enough to still run when we cancel it
    select(at, dataset="line", variant="baseline", seed=0)
    page(at, "train")
    try:
        next(b for b in at.button if b.label == "Start training").click()
        ok(at.run())
        cfg = at.session_state["selection"].config
        store = Store(root)
        wait_for(lambda: [e for e in store.progress(cfg.run_id) if e["event"] == "progress"],
                 timeout=90)  # an event every 100 steps
        ok(at.run())
        assert "This configuration is training now" in texts(at.info)
        bars = at.get("progress")
        assert len(bars) == 1 and "/ 20,000" in bars[0].proto.text
        assert [a["run_id"] for a in store.active()] == [cfg.run_id]  # the worker holds the lock
        next(b for b in at.button if b.label == "Cancel").click()
        ok(at.run())
        # The page notices on a later rerun, once the worker has exited.
        wait_for(lambda: f"`{cfg.run_id}` was cancelled" in texts(ok(at.run()).warning), timeout=30)
        assert store.find(cfg) is None  # nothing that looks finished
        assert "Start training" in [b.label for b in at.button]
        recent = next(m.value for m in at.markdown if m.value.startswith("- "))
        assert recent.splitlines()[0].split("`")[1] == cfg.run_id and "**cancelled**" in recent.splitlines()[0]
    finally:
        stop_workers(root)


# ------------------------------------------------------------------------------- Samples

def test_samples_page_shows_three_variants_and_the_reverse_process(app):
    use_small_settings(app)
    select(app, dataset="moons")
    page(app, "samples")
    assert len(app.get("plotly_chart")) == 2  # the animation waits for its expander to open
    app.session_state["samples_reverse"] = True  # as a click on "Reverse process" does
    ok(app.run())
    scatter, stacked, anim = figure(app, 0), figure(app, 1), figure(app, 2)
    titles = [a["text"] for a in scatter["layout"]["annotations"]]
    assert titles[:3] == ["baseline", "fixed", "adaptive"]
    # for a phone: the same panels one above the other (shown below 640 px instead of the row)
    assert [a["text"] for a in stacked["layout"]["annotations"]][:3] == titles[:3]
    assert stacked["layout"]["yaxis3"]["domain"][1] < stacked["layout"]["yaxis"]["domain"][0]
    sample_traces = [t for t in scatter["data"] if t["name"].endswith("samples")]
    assert len(sample_traces) == 3 and len(values(sample_traces[0]["x"])) == SMALL["n_samples"]
    labels = [s["label"] for s in anim["layout"]["sliders"][0]["steps"]]
    assert labels[0] == "t = 99" and labels[-1] == "x0 (data)" and len(anim["frames"]) == len(labels)  # alpha(t)'s t
    assert anim["layout"]["modebar"]["orientation"] == "v" == scatter["layout"]["modebar"]["orientation"]
    real_first = [t["name"] for t in scatter["data"] if t["name"] in ("real data", "baseline samples")][:2]
    assert real_first == ["baseline samples", "real data"]  # the data is drawn over the samples
    rgb = [int(scatter["data"][0]["marker"]["color"][i:i + 2], 16) for i in (1, 3, 5)]
    assert max(rgb) - min(rgb) > 60  # the baseline's samples are not grey: grey is the real data
    assert [b["label"] for b in anim["layout"]["updatemenus"][0]["buttons"]][0].endswith("Play")
    # Another dataset in the sidebar draws other runs: circle has only an adaptive run.
    select(app, dataset="circle")
    scatter = figure(app, 0)
    assert len([t for t in scatter["data"] if t["name"].endswith("samples")]) == 1
    assert "no run yet" in [a["text"] for a in scatter["layout"]["annotations"]]
    select(app, dataset="dino")
    assert not app.get("plotly_chart") and "No stored runs for **dino**" in texts(app.info)


def test_a_damaged_run_gives_a_one_line_warning_not_a_traceback(store_root, tmp_path, monkeypatch):
    root = copy_store(store_root, tmp_path / "store")
    run = Store(root).find(small_config("moons", "fixed", 0))
    (run.path / "arrays.npz").write_bytes(b"truncated")
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    use_small_settings(at)
    select(at, dataset="moons")
    for name in ("samples", "alpha", "results"):
        page(at, name)
    page(at, "samples")
    warnings = [w.value for w in at.warning]
    assert any("do not match" in w and "\n" not in w for w in warnings), warnings
    assert len([t for t in figure(at, 0)["data"] if t["name"].endswith("samples")]) == 2


def test_samples_page_draws_a_light_run_without_its_trajectory(store_root, tmp_path, monkeypatch):
    """Shipped seeds past 0 have samples but no trajectory: the scatter shows them, the animation skips them."""
    import shutil

    root = copy_store(store_root, tmp_path / "store")
    run = Store(root).find(small_config("moons", "fixed", 0))
    Store(root).save_light(run, root=root / "reference")
    shutil.rmtree(run.path)  # only the light copy is left
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    use_small_settings(at)
    select(at, dataset="moons")
    page(at, "samples")
    assert len([t for t in figure(at, 0)["data"] if t["name"].endswith("samples")]) == 3
    at.session_state["samples_reverse"] = True
    animation = figure(ok(at.run()), "samples_trajectory")
    notes = [a["text"] for a in animation["layout"]["annotations"]]
    assert "light run: no trajectory stored" in notes and len(animation["frames"]) > 1  # the others still play
    assert "shipped reference run" in texts(at.caption)


def test_samples_and_alpha_show_only_runs_with_the_sidebars_settings(app):
    """Like with like: the reference settings have no small test run; nothing is borrowed from them."""
    select(app, dataset="moons")
    page(app, "samples")
    assert "No stored runs for **moons** with these settings" in texts(app.info)
    assert f"{sum(d == 'moons' for d, _, _ in RUNS)} stored runs with other settings are not shown" in texts(app.caption)
    page(app, "alpha")
    assert "No adaptive runs stored yet" in texts(app.info)
    assert "stored runs with other settings are not shown here (steps 150" in texts(app.caption)


def test_a_run_with_a_malformed_metric_is_one_line_and_the_pages_still_draw(store_root, tmp_path, monkeypatch):
    root = copy_store(store_root, tmp_path / "store")
    run = Store(root).find(small_config("moons", "fixed", 0))
    meta = json.loads((run.path / "run.json").read_text())
    meta["metrics"]["kl_divergence"] = "oops"
    write_run_json(run.path, meta)
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    use_small_settings(at)
    for name in ("results", "train", "samples", "alpha", "verdict"):
        page(at, name)
    page(at, "results")
    assert any("metric 'kl_divergence' is 'oops'" in w.value and "\n" not in w.value for w in at.warning)
    assert f"{len(RUNS) - 1} runs with the sidebar's training settings" in texts(at.caption)


# ------------------------------------------------------------------------------- alpha(t)

def test_every_page_draws_the_good_runs_of_a_damaged_store(damaged, monkeypatch):
    """One run of each kind of damage (support.damaged_store) beside the good ones: every page draws,
    each unreadable run is a one-line warning, nothing is counted twice."""
    root, kinds = damaged
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = use_small_settings(AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run())
    select(at, dataset="moons", variant="baseline", seed=0)
    for name in ("verdict", "results", "train", "samples", "alpha", "schedules"):
        page(at, name)
    page(at, "results")
    warnings = texts(at.warning)
    for kind in ("created null", "nested", "edited"):
        assert kinds[kind] in warnings
    ids = list(at.dataframe[3].value.run_id)  # "All runs"
    assert len(ids) == len(set(ids)) and kinds["duplicate"] in ids
    select(at, seed=105)  # the run whose arrays.npz is a FIFO: a warning, not a hang
    page(at, "samples")
    assert "not a regular file" in texts(at.warning)


def test_inside_page_draws_where_in_t_and_the_branches_at_a_chosen_t(app, store_root):
    use_small_settings(app)
    select(app, dataset="moons", variant="adaptive", seed=0)
    page(app, "inside")
    where, field = figure(app, 0), figure(app, 1)
    names = [t.get("name") for t in where["data"] if t.get("name")]
    assert "adaptive − baseline (2 seeds)" in names and any(n.startswith("alpha(t), 2 adaptive seeds") for n in names)
    store = Store(store_root)
    a, b = (store.find(small_config("moons", v, s)).eval_loss_by_t() for v, s in (("adaptive", 0), ("baseline", 0)))
    a1, b1 = (store.find(small_config("moons", v, 1)).eval_loss_by_t() for v in ("adaptive", "baseline"))
    line = next(t for t in where["data"] if t.get("name") == "adaptive − baseline (2 seeds)")
    np.testing.assert_allclose(values(line["y"]), ((a - b) + (a1 - b1)) / 2, rtol=1e-6)
    titles = [x["text"] for x in field["layout"]["annotations"]]
    assert titles[0].startswith("global branch (weight") and titles[2] == "their mix: the model"
    app.slider(key="inside_t").set_value(3)
    ok(app.run())
    assert "At t = 3" in texts(app.caption)


def test_samples_say_the_three_variants_start_from_the_same_noise(app, store_root):
    use_small_settings(app)
    select(app, dataset="moons", seed=0)
    page(app, "samples")
    app.session_state["samples_reverse"] = True  # the reverse process, opened
    assert "start from **the same x_T**" in texts(ok(app.run()).caption)
    store = Store(store_root)
    starts = [store.find(small_config("moons", v, 0)).trajectory()[1][0] for v in ("baseline", "fixed", "adaptive")]
    assert all(np.array_equal(starts[0], s) for s in starts[1:])


def test_alpha_page_draws_curves_per_dataset_and_loss_per_variant(app, store_root):
    use_small_settings(app)
    select(app, dataset="moons")
    page(app, "alpha")
    alpha, loss = figure(app, 0), figure(app, 1)
    assert len(alpha["data"]) == 3  # circle seed 0; moons: the mean of seeds 0 and 1 and its band
    assert {t.get("name") for t in alpha["data"] if t.get("showlegend") is not False} == {"moons (2 seeds)", "circle"}
    moons = [Store(store_root).find(small_config("moons", "adaptive", s)).alpha() for s in (0, 1)]
    mean = next(t for t in alpha["data"] if t.get("name") == "moons (2 seeds)")
    assert np.allclose(values(mean["y"]), np.round(np.mean(moons, 0), 4), atol=1e-4)
    assert any(s.get("y0") == 0.5 and s.get("y1") == 0.5 for s in alpha["layout"]["shapes"])
    run = Store(store_root).find(small_config("circle", "adaptive", 0))
    circle = next(t for t in alpha["data"] if t["name"] == "circle")
    assert np.allclose(values(circle["y"]), np.round(run.alpha(), 4))
    assert "alpha=" in circle["hovertemplate"]
    assert [t["name"] for t in loss["data"]] == ["baseline", "fixed", "adaptive"]
    app.toggle(key="alpha_per_seed").set_value(True)
    ok(app.run())
    assert len(figure(app, 0)["data"]) == 3 and sum(t.get("name") == "moons (2 seeds)" for t in figure(app, 0)["data"]) == 2
    select(app, dataset="circle")
    assert [t["name"] for t in figure(app, 1)["data"]] == ["adaptive"]
    app.multiselect(key="alpha_datasets").set_value(["circle"])
    ok(app.run())
    assert len(figure(app, 0)["data"]) == 1


# ------------------------------------------------------------------------------- library

def test_summarize_progress_events():
    events = [{"event": "progress", "step": s, "total": 100, "loss": 1.0 / s, "lr": 1e-3,
               "elapsed": s / 10} for s in (10, 20, 30, 40)]
    events[-1]["alpha"] = [0.4] * 100
    status = summarize("r", events, alive=True)
    assert (status.state, status.step, status.total, status.fraction) == ("running", 40, 100, 0.4)
    assert status.steps_per_s == pytest.approx(10.0) and status.eta_s == pytest.approx(6.0)
    assert status.alpha == [0.4] * 100 and status.steps == [10, 20, 30, 40]
    done = summarize("r", events + [{"event": "done", "run_id": "r", "kl_divergence": 0.1}], False)
    assert done.state == "done" and done.metrics["kl_divergence"] == 0.1
    failed = summarize("r", events + [{"event": "failed", "error": "loss became nan"}], False)
    assert failed.state == "failed" and failed.error == "loss became nan"
    assert summarize("r", events + [{"event": "evaluating"}], alive=True).state == "evaluating"
    sampling = summarize("r", events + [{"event": "evaluating"}, {"event": "phase", "name": "eval loss", "index": 1},
                                        {"event": "phase", "name": "sampling", "index": 2}], alive=True)
    assert (sampling.state, sampling.phase, sampling.phase_index) == ("evaluating", "sampling", 2)
    assert summarize("r", events, alive=False).state == "unknown"
    assert summarize("r", [], alive=True).state == "starting"


def test_a_new_attempt_does_not_show_the_previous_attempts_end(tmp_path):
    """Retrain: until the new worker truncates the progress file, its old 'done' is not news."""
    store = Store(tmp_path)
    cfg = small_config("line", "baseline", 0)
    store.start_progress(cfg.run_id)
    store.append_progress(cfg.run_id, {"event": "done", "run_id": cfg.run_id})
    time.sleep(0.05)
    registry = Runner(store)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    registry._workers[cfg.run_id] = _Worker(sleeper, tempfile.TemporaryFile(), tempfile.TemporaryFile(),
                                            time.time(), cfg)
    try:
        assert registry.status(cfg.run_id).state == "starting"
        store.start_progress(cfg.run_id)  # what the new worker does first
        store.append_progress(cfg.run_id, {"event": "progress", "step": 5, "total": 150,
                                           "loss": 1.0, "lr": 1e-3, "elapsed": 0.5})
        assert registry.status(cfg.run_id).state == "running"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_worker_receives_the_whole_config_as_json(tmp_path):
    cfg = small_config("moons", "fixed", 3)
    args = worker_args(cfg, tmp_path, device="cpu", threads=1, force=True)
    assert args[1:4] == ["-m", "dualscale", "train"] and args[-1] == "--force"
    assert TrainConfig.from_json(args[args.index("--config") + 1]) == cfg  # every field, no re-spelled flags
    assert "--steps" not in args
    assert args[args.index("--store") + 1] == str(tmp_path)


def test_registry_dedupes_and_reports_a_failure_in_one_line(tmp_path):
    store = Store(tmp_path / "store")
    registry = Runner(store, device="cpu")
    cfg = small_config("line", "baseline", 0, lr=1e6, grad_clip=1e9, steps=400)  # diverges
    try:
        assert registry.submit(cfg) == registry.submit(cfg) == cfg.run_id
        assert len(registry._workers) == 1
        wait_for(lambda: cfg.run_id not in registry.running_ids(), timeout=90)
        status = registry.status(cfg.run_id)
        assert status.state == "failed" and status.error and "\n" not in status.error
        assert store.find(cfg) is None
    finally:
        registry.stop_all()


def test_marked_tables_mean_ci_and_stars_from_the_winners():
    rows = [dict(variant=v, dataset="moons", seed=s, **{m: val + s for m in METRICS})
            for v, val in (("baseline", 1.0), ("fixed", 0.5), ("adaptive", 2.0)) for s in (0, 1)]
    frame = pd.DataFrame(rows)
    tabs = {v: table(frame, v) for v in ("baseline", "fixed", "adaptive")}
    tables = marked_tables(tabs, {("moons", "kl_divergence"): "fixed"})
    fixed = tables["fixed"]
    paper = PAPER_TABLES["fixed"]["moons"]["kl_divergence"]
    ci = 12.706205 * 0.7071068 / math.sqrt(2)  # t(0.975, 1 df) * sd / sqrt(n)
    assert fixed.loc["moons", "KL"] == f"1.000 ± {ci:.3f} ★"
    assert fixed.loc["moons", "KL paper (Δ)"] == f"{paper:.3f} ({1.0 - paper:+.3f})"
    assert tables["baseline"].loc["moons", "KL"] == f"1.500 ± {ci:.3f}"
    assert "★" not in tables["baseline"].loc["moons", "loss"] and list(fixed.index) == ["moons"]
    assert "★" not in marked_tables(tabs)["fixed"].loc["moons", "KL"]  # no winners given, no star


def test_smooth_and_animation_stay_light():
    x, y = smooth(np.arange(10_000, dtype=float), points=100)
    assert len(x) == len(y) == 100 and y[0] == pytest.approx(49.5)
    ts = np.arange(100, -1, -1)
    traj = np.random.default_rng(0).normal(size=(101, 1000, 2))
    fig = trajectory_animation(np.zeros((10, 2)), {"a": (ts, traj), "b": None})
    assert len(fig.frames) == 35 and fig.frames[0].name == "100" and fig.frames[-1].name == "0"
    assert len(fig.to_json()) < 600_000


# ------------------------------------------------------------------------------- the address

def test_every_changed_setting_lives_in_the_address(store_root, monkeypatch):
    monkeypatch.setenv("DUALSCALE_STORE", str(store_root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.query_params.update(dataset="moons", variant="fixed", seed="3", steps="500", lr="0.001")
    ok(at.run())
    config = at.session_state["selection"].config
    assert (config.dataset, config.variant, config.seed, config.steps, config.lr) == ("moons", "fixed", 3, 500, 0.001)
    assert config.batch_size == TrainConfig().batch_size and not at.sidebar.warning
    at.number_input(key="cfg_batch_size").set_value(128)
    ok(at.run())
    q = at.query_params
    assert (q["steps"], q["batch_size"], q["seed"]) == ("500", "128", "3") and "n_points" not in q  # defaults stay out


@pytest.mark.parametrize("key, text, message", [
    ("seed", "²", "seed must be a whole number, got '²'"),  # isdigit() accepts it, int() refuses it
    ("seed", "99999999999999999999", "seed must be in 0..9223372036854775807"),
    ("steps", "0", "steps must be in 1.."),
    ("lr", "fast", "lr must be a number, got 'fast'"),
    ("dataset", "dinosaur", "unknown dataset 'dinosaur'"),
])
def test_bad_address_values_are_replaced_with_a_notice(store_root, monkeypatch, key, text, message):
    monkeypatch.setenv("DUALSCALE_STORE", str(store_root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.query_params[key] = text
    ok(at.run())  # no exception on any page
    (notice,) = [w.value for w in at.sidebar.warning]
    assert message in notice and "using the default" in notice and "\n" not in notice
    assert getattr(at.session_state["selection"].config, key) == getattr(TrainConfig(), key)


def test_a_bad_workers_setting_is_a_line_on_train_not_a_crash(store_root, tmp_path, monkeypatch):
    root = copy_store(store_root, tmp_path / "store")  # a new store root: a new runner, set up again
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    monkeypatch.setenv("DUALSCALE_WORKERS", "abc")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    page(at, "train")
    assert "DUALSCALE_WORKERS must be a whole number >= 1, got 'abc'; using" in texts(at.warning)


def test_dashboard_workers_are_capped_and_configurable(monkeypatch):
    from dualscale.system import cores, dashboard_workers

    monkeypatch.delenv("DUALSCALE_WORKERS", raising=False)
    assert dashboard_workers("cpu") == max(1, cores() - 1)
    monkeypatch.setenv("DUALSCALE_WORKERS", "3")
    assert dashboard_workers("cpu") == 3
    monkeypatch.setenv("DUALSCALE_WORKERS", "0")
    with pytest.raises(ValueError, match="DUALSCALE_WORKERS must be a whole number >= 1"):
        dashboard_workers("cpu")


def test_the_server_listens_on_this_machine_only():
    r = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert 'address = "localhost"' in r.stdout


# ------------------------------------------------------------------------------- schedules

def test_schedules_page_draws_schedules_the_start_cost_and_the_study(store_root, tmp_path, monkeypatch):
    from dualscale.runs import run_config

    root = copy_store(store_root, tmp_path / "store")
    for seed in (0, 1):  # the small moons baselines again, under the cosine schedule
        list(run_config(small_config("moons", "baseline", seed, beta_schedule="cosine"), Store(root), "cpu"))
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    use_small_settings(at)
    select(at, dataset="moons", variant="baseline")
    page(at, "schedules")
    assert [t.value for t in at.title] == ["Noise schedules"]
    curves, stacked = figure(at, "schedule_curves"), figure(at, "schedule_curves_stacked")  # wide, and a phone's
    names = [d["name"] for d in curves["data"] if d.get("showlegend") is not False]
    assert names[0] == "linear (sqrt(abar_T) = 0.6030)" and any(n.startswith("zero_snr, v (sqrt(abar_T) = 0.0000)") for n in names)
    assert [d["name"] for d in stacked["data"]] == [d["name"] for d in curves["data"]]
    assert ({d["xaxis"] for d in curves["data"]}, {d["yaxis"] for d in curves["data"]}) == ({"x", "x2"}, {"y", "y2"})
    assert curves["layout"]["xaxis2"]["domain"][0] > 0.5 and stacked["layout"]["yaxis2"]["domain"][1] < 0.5  # beside, below
    assert stacked["layout"]["yaxis2"]["type"] == "log" and stacked["layout"]["xaxis2"]["domain"] == [0.0, 1.0]
    bars = figure(at, "start_kl")["data"]
    assert [b["x"] for b in bars] == [["linear<br>(2 seeds)", "cosine<br>(2 seeds)"]] * 2  # from N(0, I), from q(x_T)
    assert all(np.isfinite(values(b["y"]).astype(float)).all() for b in bars)
    assert "**moons**, cosine − linear (2 seeds): " in texts(at.markdown)
    forest = figure(at, "schedule_forest")
    assert [a["text"] for a in forest["layout"]["annotations"]][0] == "KL Divergence (lower is better)"
    assert "moons" in forest["data"][0]["hovertemplate"] and "schedules: kl_divergence" in forest["data"][0]["hovertemplate"]
    assert at.get("button_group")[0].value == "cosine − linear"


def test_add_seeds_queues_exactly_the_planned_runs_and_a_cancel_reads_as_cancelled(store_root, tmp_path, monkeypatch):
    from views import common

    root = copy_store(store_root, tmp_path / "store")
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    use_small_settings(at, steps=20_000)  # long runs: still going when we cancel them
    at.number_input(key="seeds_n").set_value(1)
    next(b for b in at.button if b.label == "Plan one round").click()  # typed and clicked in one rerun
    ok(at.run())
    plan = at.session_state["seeds_plan"]
    assert len(plan["todo"]) == 12 and {c.seed for c in plan["todo"]} == {0}  # batch 1, not the old 5
    shown = texts(at.warning)
    assert "This queues **12 runs** (circle: adaptive, baseline, fixed × seed 0;" in shown and "min" in shown
    try:
        next(b for b in at.button if b.label == "Confirm: queue 12 runs").click()
        ok(at.run())
        sweep = common.sweeps()[at.session_state["selection"].config.to_json()]
        assert sweep.ids == [c.run_id for c in plan["todo"]]  # the runs queued are the runs shown
        bars = at.get("progress")
        assert len(bars) == 1 and "Adding seeds: 0 of 12 runs done" in bars[0].proto.text
        reloaded = use_small_settings(AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run(), steps=20_000)
        assert any("Adding seeds:" in b.proto.text for b in reloaded.get("progress"))  # a new session finds it
        next(b for b in at.button if b.label == "Cancel").click()
        ok(at.run())
        assert "Cancelled: 0 of 12 runs had finished" in texts(at.warning)
        assert "done" not in texts(at.success)
        wait_for(lambda: not Store(root).active() and sweep.counts()["cancelled"] == 12, timeout=30)
        assert sweep.counts()["failed"] == 0
    finally:
        stop_workers(root)
        common.sweeps().clear()


@pytest.mark.parametrize("values, message", [
    ({"beta_schedule": "zero_snr"}, "use prediction v"),
    ({"compute_precision": "tf32"}, "tf32 is a CUDA GPU's"),
])
def test_impossible_schedule_and_precision_are_refused_before_start(store_root, monkeypatch, values, message):
    monkeypatch.setenv("DUALSCALE_STORE", str(store_root))
    monkeypatch.setenv("DUALSCALE_DEVICE", "cpu")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    for name, value in values.items():
        at.selectbox(key=f"cfg_{name}").set_value(value)
    ok(at.run())
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1 and message in errors[0]
    page(at, "train")
    assert "Start training" not in [b.label for b in at.button]


def test_a_setting_far_from_the_reference_is_said_not_taken_silently(store_root, monkeypatch):
    """Issue 27: lr=1e9 in the address was taken without a word."""
    monkeypatch.setenv("DUALSCALE_STORE", str(store_root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.query_params["lr"] = "1e9"
    ok(at.run())
    assert at.session_state["selection"].config.lr == 1e9  # possible, so taken...
    warnings = [w.value for w in at.sidebar.warning]
    assert any(w.startswith("Learning rate (peak) is 1e+09, 1,000x or more from the reference's 0.0003") for w in warnings)
    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    fresh.query_params["lr"] = "0.001"
    ok(fresh.run())
    assert not [w.value for w in fresh.sidebar.warning]
