"""The shape of the library: one home per idea, generated flags and widgets, no import cycle."""
import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dualscale import METRICS, Store, TrainConfig
from dualscale.config import bounds_text, fields
from dualscale.events import Progress
from dualscale.metrics import Metric, sample_metrics
from dualscale.paper import PAPER_METRICS, for_csv, metrics_frame, table
from dualscale.plots import marked_tables
from dualscale.runner import Runner
from dualscale.train import Runs, train
from support import ROOT, copy_store, small_config, stop_workers

PACKAGE = ROOT / "dualscale"


def imports_of(path: Path) -> set[str]:
    """dualscale modules a file imports, at the top or inside functions (relative or absolute)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                names = [base] if base else [a.name for a in node.names]
                out |= {n.split(".")[0] for n in names}
            elif base.startswith("dualscale."):
                out.add(base.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dualscale.")}
    return out


def test_no_import_cycle_inside_the_package():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {p.stem: imports_of(p) & modules - {p.stem} for p in PACKAGE.glob("*.py")}
    graph.pop("__init__")  # the package itself re-exports; nothing inside imports it
    for deps in graph.values():
        deps.discard("__init__")
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            visit(d, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])
    assert "evaluate" not in graph["train"] and "sample" not in graph  # sample() lives in diffusion


def test_a_scoring_worker_never_imports_torch():
    """A sweep's scoring workers import the metrics alone: no torch (seconds per worker with CUDA)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from dualscale.metrics import score_runs; "
            "s = np.random.default_rng(0).normal(size=(300, 2)); "
            "out = score_runs('moons', 2000, 0.36, [(s, s)]); "
            "assert len(out) == 1 and 'kl_oracle_start' in out[0], out; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_no_streamlit_and_no_printing_in_the_library():
    for p in PACKAGE.glob("*.py"):
        text = p.read_text()
        assert "streamlit" not in imports_of(p) and "import streamlit" not in text, p.name
        if p.stem != "__main__":
            assert "print(" not in text and "tqdm" not in text, p.name


def test_train_help_shows_every_setting_with_its_default(cli):
    r = cli("train", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())  # argparse wraps lines
    for f in fields():
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        help_start = f.metadata["help"].split()[0]
        assert f"{help_start}" in text
    for f in fields():
        assert f"(default: {f.default})" in text, f.name


def test_reproduce_help_offers_lists_of_the_selection(cli):
    text = " ".join(cli("reproduce", "--help").stdout.split())
    assert "--datasets DATASET [DATASET ...]" in text and "--seeds SEED [SEED ...]" in text
    assert "(default: circle dino line moons)" in text and "(default: baseline fixed adaptive)" in text


def test_every_setting_carries_its_metadata():
    for f in fields():
        m = f.metadata
        assert m["label"] and m["help"], f.name
        if m["choices"] is None:
            assert f.type in ("int", "float") and bounds_text(f), f.name  # every number is bounded
            with pytest.raises(ValueError, match=f"^{f.name} must be"):
                TrainConfig(**{f.name: -10**9}).validate()
        else:
            assert f.default in m["choices"]
            with pytest.raises(ValueError, match=f"unknown {f.name} 'nope'; choose one of"):
                TrainConfig(**{f.name: "nope"}).validate()


def test_config_round_trips_through_json():
    cfg = TrainConfig(dataset="moons", variant="fixed", seed=3, lr=1, beta_schedule="quadratic")
    assert TrainConfig.from_json(cfg.to_json()) == cfg and TrainConfig.from_json(cfg.to_json()).run_id == cfg.run_id
    for bad, message in (("{oops", "not valid JSON"), ("[1, 2]", "must be a JSON object"),
                         ('{"steps": "many"}', "steps must be a whole number")):
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_json(bad)


def test_train_yields_progress_only_and_returns_the_trained_run():
    gen = train(TrainConfig(dataset="line", variant="baseline", steps=40, n_points=512, batch_size=64), "cpu", every=10)
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as end:
            trained = end.value
            break
    assert all(isinstance(e, Progress) for e in seen) and [e.step for e in seen] == [10, 20, 30, 40]
    assert [type(g) for g in trained] == [Runs] and trained[0].losses.shape == (1, 40)
    assert seen[-1].to_event()["event"] == "progress" and "alpha" not in seen[-1].to_event()


def test_a_metric_added_to_the_registry_reaches_every_table(monkeypatch):
    """Adding a metric = one registry entry: it is computed from samples and shows in the frame."""
    spread = Metric("spread", "Sample Spread", "spread", "", 2, False, "sd of the samples",
                    lambda real, samples: float(np.std(samples)))
    monkeypatch.setitem(METRICS, "spread", spread)
    real, samples = np.random.default_rng(0).normal(size=(500, 2)), np.random.default_rng(1).normal(size=(300, 2))
    values = sample_metrics(real, samples)
    assert values["spread"] == pytest.approx(np.std(samples)) and "kl_divergence" in values

    @dataclasses.dataclass
    class FakeRun:  # the fields metrics_frame reads, nothing else
        id: str
        config: TrainConfig
        metrics: dict
        shipped: bool = False
        path: Path = Path("local/run")

    runs = [FakeRun(f"r{v}", TrainConfig(dataset="moons", variant=v),
                    {**{m: value for m in PAPER_METRICS}, "spread": 0.5}) for v, value in (("baseline", 1.0), ("fixed", 0.9))]
    frame = metrics_frame(runs)
    assert list(frame["spread"]) == [0.5, 0.5]
    tables = marked_tables({v: table(frame, v) for v in ("baseline", "fixed")}, {("moons", "eval_loss"): "fixed"})
    assert "KL" in tables["fixed"].columns and tables["fixed"].loc["moons", "loss"] == "0.900 ★"
    csv = for_csv(frame)  # what a CSV carries: the units in the names, the values untouched
    assert {"training_time_s", "inference_time_s", "kl_divergence_bits", "eval_loss", "spread"} <= set(csv.columns)
    assert "kl_divergence" not in csv.columns and list(csv.kl_divergence_bits) == [1.0, 0.9]
    assert for_csv(table(frame, "fixed")).columns[-5:].tolist() == [
        "KL Divergence (bits)", "KL Divergence (bits) sd", "KL Divergence (bits) ci", "KL Divergence (bits) paper",
        "KL Divergence (bits) diff"]
    import pandas as pd
    rows = for_csv(pd.DataFrame({"dataset": ["dino"] * 3, "metric": ["kl_divergence", "training_time", "recall"]}))
    assert rows.columns.tolist() == ["dataset", "metric", "unit"] and rows.unit.tolist() == ["bits", "s", ""]


def test_metric_specs_are_complete():
    assert list(METRICS)[:4] == list(PAPER_METRICS)
    for name, m in METRICS.items():
        assert m.name == name and m.label and m.short and m.help.endswith(".") and m.digits >= 0
    assert METRICS["inference_time"].format(0.1724) == "0.172" and METRICS["training_time"].format(37.421) == "37.42"
    assert METRICS["kl_divergence"].format(0.0123, signed=True) == "+0.012"


def test_runner_queues_beyond_its_slots_and_cancels_queued_and_running(small_store, tmp_path):
    """One slot: the second run waits (queued) and cancelling it drops it; the first is SIGTERMed."""
    root = copy_store(small_store, tmp_path / "store")
    store = Store(root)
    runner = Runner(store, device="cpu", jobs=1)
    first, second = (small_config("line", "baseline", s, steps=50_000) for s in (11, 12))
    try:
        runner.submit(first)
        runner.submit(second)
        assert runner.queued_ids() == [second.run_id] and runner.status(second.run_id).state == "queued"
        assert runner.cancel(second.run_id) and runner.queued_ids() == []
        assert runner.cancel(first.run_id)
        runner._workers[first.run_id].proc.wait(60)
        assert runner.status(first.run_id).state == "cancelled"  # whether or not it had begun training
        assert store.find(first) is None and second.run_id not in runner._workers
    finally:
        runner.stop_all()
        stop_workers(root)


def test_settings_parse_strictly_from_text():
    from dualscale.config import parse_setting

    assert parse_setting("seed", "12") == 12 and parse_setting("lr", "3e-4") == 3e-4
    assert parse_setting("dataset", "moons") == "moons" and parse_setting("lr", "1") == 1.0
    for name, text, message in (("seed", "²", "whole number"), ("seed", "1.5", "whole number"),
                                ("steps", "-4", "steps must be in 1.."), ("lr", "nan", "must be a number"),
                                ("lr", "inf", "must be a number"), ("variant", "huge", "unknown variant"),
                                ("nope", "1", "unknown setting 'nope'")):
        with pytest.raises(ValueError, match=message):
            parse_setting(name, text)


def test_the_package_installs_with_a_dualscale_command_and_its_data_files():
    """pip install . (or -e .) gives a `dualscale` command that is main(), and ships every data file
    the package reads (issue 27: no pyproject.toml meant no install and no command)."""
    import tomllib

    from dualscale.__main__ import main

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry = project["project"]["scripts"]["dualscale"]
    module, func = entry.split(":")
    assert getattr(__import__(module, fromlist=[func]), func) is main
    data = set(project["tool"]["setuptools"]["package-data"]["dualscale"])
    on_disk = {p.name for p in (ROOT / "dualscale").iterdir() if p.suffix in (".csv", ".json")}
    assert on_disk <= data, on_disk - data
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]


def test_the_top_level_help_names_every_command(cli):
    r = cli("--help")
    for command in ("train", "reproduce", "settle", "verdict", "rescore", "export", "list"):
        assert command in r.stdout.split("positional arguments")[0], command
