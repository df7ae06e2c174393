"""The Runs page (issue 27: what users of TensorBoard, W&B and Diffusion Explorer expect), through
streamlit's AppTest: every run in one filterable table, picked runs compared side by side, local
runs deleted after a confirmation, shipped ones never."""
from __future__ import annotations


import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from support import ROOT, RUNS, copy_store, figure, small_config, values
from dualscale.record import Record
from dualscale import Store


@pytest.fixture
def start(monkeypatch):
    def go(root) -> AppTest:
        monkeypatch.setenv("DUALSCALE_STORE", str(root))
        at = ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run())
        return ok(at.switch_page("views/runs.py").run())

    return go


@pytest.fixture
def runs_page(small_store, start):
    return start(small_store)


@pytest.fixture
def private(small_store, tmp_path):
    """A writable copy of the small store, for the tests that delete."""
    return copy_store(small_store, tmp_path / "store")


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def table(at: AppTest):
    (frame,) = at.dataframe
    return frame.value


def pick(at: AppTest, *ids: str) -> AppTest:
    """Tick the table's rows of these runs (row selection is widget state: set it as a click would)."""
    frame = at.dataframe[0]
    shown = list(frame.value.run_id)
    at.session_state[frame.key] = {"selection": {"rows": [shown.index(i) for i in ids], "columns": []}}
    return ok(at.run())


def run_id(dataset: str, variant: str, seed: int) -> str:
    return small_config(dataset, variant, seed).run_id


def button(at: AppTest, label: str):
    (b,) = [b for b in at.button if b.label == label]
    return b


# ------------------------------------------------------------------------------- the table

def test_the_page_lists_every_run_with_its_settings_metrics_origin_and_machine(runs_page, small_store):
    at = runs_page
    assert [t.value for t in at.title] == ["Runs"]
    frame = table(at)
    assert sorted(frame.run_id) == sorted(r.id for r in Store(small_store).runs()) and len(frame) == len(RUNS)
    assert list(frame.columns[:5]) == ["run_id", "origin", "dataset", "variant", "seed"]
    assert {"kl_divergence", "eval_loss", "steps", "lr", "machine"} <= set(frame.columns)
    assert set(frame.origin) == {"local"} and (frame.steps == 150).all()
    assert f"{len(RUNS)} runs of {len(RUNS)} match the filters" in texts(at.caption)
    assert "Not used on this page: Dataset, variant, seed and settings" in texts(at.sidebar.caption)
    assert not at.get("plotly_chart") and not at.subheader  # nothing picked: no comparison, no delete


def test_filters_narrow_the_table(runs_page):
    at = runs_page
    at.multiselect(key="runs_dataset").set_value(["circle"])
    ok(at.run())
    assert list(table(at).run_id) == [run_id("circle", "adaptive", 0)]
    assert f"1 run of {len(RUNS)} match the filters" in texts(at.caption)
    at.multiselect(key="runs_dataset").set_value(["circle", "moons"])
    at.multiselect(key="runs_variant").set_value(["baseline"])
    ok(at.run())
    assert sorted(table(at).run_id) == sorted(run_id("moons", "baseline", s) for s in (0, 1))
    at.multiselect(key="runs_variant").set_value(["adaptive", "baseline", "fixed"])
    at.text_input(key="runs_id").set_value("MOONS-ADAPTIVE")  # a plain, case-blind substring
    ok(at.run())
    assert sorted(table(at).run_id) == sorted(run_id("moons", "adaptive", s) for s in (0, 1))
    at.text_input(key="runs_id").set_value("[.*")  # not a pattern: matches nothing, breaks nothing
    ok(at.run())
    assert table(at).empty and f"0 runs of {len(RUNS)} match the filters" in texts(at.caption)
    at.multiselect(key="runs_origin").set_value([])
    at.text_input(key="runs_id").set_value("")
    ok(at.run())
    assert table(at).empty


# ------------------------------------------------------------------------------- compare

def test_selecting_runs_draws_them_side_by_side(runs_page, small_store):
    at = runs_page
    ids = [run_id("moons", "adaptive", 0), run_id("circle", "adaptive", 0), run_id("moons", "baseline", 0)]
    names = ["moons adaptive s0", "circle adaptive s0", "moons baseline s0"]
    pick(at, *ids)
    assert "Compare" in [h.value for h in at.subheader]
    loss = figure(at, "runs_loss")
    assert [t["name"] for t in loss["data"]] == names and loss["layout"]["yaxis"]["type"] == "log"
    assert len({t["line"]["color"] for t in loss["data"]}) == 3  # one colour per run, not per variant
    raw = values(loss["data"][0]["y"])
    store = Store(small_store)
    assert raw[-1] == pytest.approx(store.get(ids[0]).loss_history()[-1], abs=1e-4)  # 150 steps: one point each
    for i, (rid, name) in enumerate(zip(ids, names)):
        panel = figure(at, f"runs_samples_{i}")
        (samples,) = [t for t in panel["data"] if t["name"] == f"{name} samples"]
        assert len(values(samples["x"])) == len(store.get(rid).samples())
        assert any(t["name"] == "real data" for t in panel["data"])
        assert samples["marker"]["color"] == loss["data"][i]["line"]["color"]
    alpha = figure(at, "runs_alpha")
    curves = [t for t in alpha["data"] if t.get("mode") == "lines"]
    by_name = {t["name"]: t for t in curves}
    assert sorted(by_name) == sorted(names[:2])  # the baseline has no alpha(t)
    for i in (0, 1):
        assert by_name[names[i]]["line"]["color"] == loss["data"][i]["line"]["color"]
    np.testing.assert_allclose(values(by_name[names[1]]["y"]), np.round(store.get(ids[1]).alpha(), 4), atol=1e-6)
    assert "**moons adaptive s0**: seed 0, 150 steps (local run" in texts(at.caption)

    at.slider(key="runs_smoothing").set_value(0.9)
    at.toggle(key="runs_log").set_value(False)
    ok(at.run())
    loss = figure(at, "runs_loss")
    smoothed = values(loss["data"][0]["y"])
    assert loss["layout"]["yaxis"]["type"] == "linear"
    expected = np.empty_like(raw, dtype=float)
    s = 0.0
    for k, v in enumerate(raw):  # TensorBoard's debiased moving average
        s = 0.9 * s + 0.1 * v
        expected[k] = s / (1 - 0.9 ** (k + 1))
    np.testing.assert_allclose(smoothed, expected, atol=2e-5)
    assert smoothed.std() < raw.std()


def test_one_run_is_not_a_comparison_and_more_than_six_are_capped(private, start):
    store = Store(private)
    base = store.get(run_id("moons", "baseline", 0))
    for seed in (7, 8):  # light copies under other seeds: eight runs in all
        arrays = base._arrays("arrays.npz")
        store.save(small_config("moons", "baseline", seed), Record(base.metrics, dict(arrays), None, {}))
    at = start(private)
    frame = table(at)
    assert len(frame) == len(RUNS) + 2
    pick(at, frame.run_id[0])
    assert "Select one more run to compare." in texts(at.caption) and not at.get("plotly_chart")
    pick(at, *frame.run_id)
    assert f"{len(RUNS) + 2} runs selected: the first 6 are compared." in texts(at.caption)
    assert len(figure(at, "runs_loss")["data"]) == 6 and len([c for c in at.get("plotly_chart")
                                                              if "runs_samples_" in c.proto.id]) == 6


# ------------------------------------------------------------------------------- delete

def test_deleting_a_local_run_asks_first_then_removes_it(private, start):
    at = start(private)
    gone, kept = run_id("moons", "fixed", 0), run_id("moons", "baseline", 0)
    pick(at, gone)
    button(at, "Delete 1 local run").click()
    ok(at.run())
    assert (private / gone).is_dir()  # asked, not done
    button(at, "Cancel").click()
    ok(at.run())
    assert not [b for b in at.button if b.label.startswith("Confirm")] and (private / gone).is_dir()

    pick(at, gone, kept)
    button(at, "Delete 2 local runs").click()
    ok(at.run())
    assert gone in texts(at.warning) and (private / gone).is_dir()
    pick(at, gone)  # the selection changed: the question is asked again, for what is picked now
    assert not [b for b in at.button if b.label.startswith("Confirm")]
    button(at, "Delete 1 local run").click()
    ok(at.run())
    button(at, "Confirm: delete 1 run").click()
    ok(at.run())
    assert not (private / gone).exists() and (private / kept).is_dir()
    assert not [p for p in private.iterdir() if p.name.startswith(".trash-")]
    (success,) = at.success
    assert success.value == f"Deleted 1 run: ` {gone} `"
    assert gone not in list(table(at).run_id) and len(table(at)) == len(RUNS) - 1
    assert "Compare" not in [h.value for h in at.subheader] and not at.get("plotly_chart")  # the selection cleared


def test_a_run_being_trained_is_not_deleted(private, start):
    at = start(private)
    rid = run_id("moons", "fixed", 0)
    pick(at, rid)
    button(at, "Delete 1 local run").click()
    ok(at.run())
    with Store(private).lock(small_config("moons", "fixed", 0)):  # a worker starts training it meanwhile
        button(at, "Confirm: delete 1 run").click()
        ok(at.run())
    assert (private / rid).is_dir() and not at.success
    (error,) = at.main.error
    assert error.value == f"` run {rid} is being trained now: cancel it first `"
    assert rid in list(table(at).run_id)


def test_a_shipped_run_cannot_be_deleted(private, start):
    import shutil

    store = Store(private)
    run = store.find(small_config("moons", "fixed", 0))
    shipped = store.save_light(run, root=private / "reference")
    shutil.rmtree(run.path)  # only the shipped copy is left
    local = run_id("moons", "baseline", 0)
    at = start(private)
    frame = table(at)
    assert frame.set_index("run_id").origin[shipped.id] == "reference"
    at.multiselect(key="runs_origin").set_value(["reference"])
    ok(at.run())
    assert list(table(at).run_id) == [shipped.id]
    pick(at, shipped.id)
    assert f"Not deletable, shipped with the project: ` {shipped.id} `" in texts(at.caption)
    assert not [b for b in at.button if b.label.startswith(("Delete", "Confirm"))]

    at.multiselect(key="runs_origin").set_value(["local", "reference"])
    ok(at.run())
    pick(at, shipped.id, local)
    assert f"Not deletable, shipped with the project: ` {shipped.id} `" in texts(at.caption)
    button(at, "Delete 1 local run").click()
    ok(at.run())
    button(at, "Confirm: delete 1 run").click()
    ok(at.run())
    assert not (private / local).exists() and shipped.path.is_dir()
    assert shipped.id in list(table(at).run_id) and local not in list(table(at).run_id)
