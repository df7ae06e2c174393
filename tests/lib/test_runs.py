"""Real short training runs: determinism, the run store, bad input, the command line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dualscale import RunInProgress, Store, StoreError, TrainConfig, run_config
from dualscale.system import resolve_device
from dualscale.train import TrainingFailed, fit, train
from support import ROOT
SMALL = dict(steps=200, n_points=4096, n_samples=1000)


def final(events):
    return [e for e in events if e["event"] == "done"][-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def adaptive_run(store):
    config = TrainConfig(dataset="moons", variant="adaptive", **SMALL)
    events = list(run_config(config, store, "cpu", previews=2))
    return config, events


# ---- one run, end to end --------------------------------------------------------------------
def test_run_events_and_metrics(adaptive_run):
    config, events = adaptive_run
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["step"] == config.steps and progress[-1]["total"] == config.steps
    assert all(b["step"] > a["step"] for a, b in zip(progress, progress[1:]))
    assert len([e for e in progress if "alpha" in e]) == 2 and len(progress[-1]["alpha"]) == 100
    assert len(progress[-1]["preview"]) == 300
    done = final(events)
    assert done["cached"] is False
    assert set(done) >= {"training_time", "eval_loss", "inference_time", "kl_divergence", "run_id", "path"}
    assert 0.3 < done["eval_loss"] < 1.2 and done["training_time"] > 0 and done["inference_time"] > 0


def test_store_round_trip(adaptive_run, store):
    config, events = adaptive_run
    done = final(events)
    run = store.find(config)
    assert run.id == config.run_id == done["run_id"] and run.config == config
    assert run.metrics["eval_loss"] == done["eval_loss"]
    assert run.samples().shape == (1000, 2) and run.loss_history().shape == (200,)
    ts, pts = run.trajectory()
    assert ts[0] == 100 and ts[-1] == 0 and pts.shape == (101, 1000, 2)
    np.testing.assert_allclose(pts[-1], run.samples()[:1000], atol=2e-3)  # float16 frames
    alpha = run.alpha()
    assert alpha.shape == (100,) and ((alpha > 0) & (alpha < 1)).all()
    # the stored EMA weights reproduce the stored alpha(t)
    torch.testing.assert_close(run.load_model("ema").alpha_table().detach(), torch.from_numpy(alpha))
    assert [r.id for r in store.runs()] == [run.id]
    events = store.progress(run.id)
    assert events[0]["event"] == "started" and events[0]["pid"] == os.getpid() and events[-1]["event"] == "done"


def test_stored_config_loads_instead_of_retraining(adaptive_run, store):
    config, _ = adaptive_run
    t0 = time.perf_counter()
    events = list(run_config(config, store, "cpu"))
    assert time.perf_counter() - t0 < 2 and len(events) == 1 and events[0]["cached"] is True


def test_same_seed_same_metrics_other_seed_differs(adaptive_run, tmp_path):
    config, events = adaptive_run
    other = Store(tmp_path)
    again = final(run_config(config, other, "cpu"))
    for key in ("eval_loss", "kl_divergence"):
        assert again[key] == final(events)[key]
    np.testing.assert_array_equal(other.find(config).samples(), Store(Path(final(events)["path"]).parent).find(config).samples())
    seed1 = final(run_config(TrainConfig(**{**config.to_dict(), "seed": 1}), other, "cpu"))
    assert seed1["eval_loss"] != again["eval_loss"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it)")
def test_cuda_same_seed_same_numbers(tmp_path):
    """On a GPU too, one seed gives bit-identical runs (no atomics in the step's sums)."""
    config = TrainConfig(dataset="dino", variant="adaptive", **SMALL)
    runs = [final(run_config(config, Store(tmp_path / str(i)), "cuda")) for i in range(2)]
    for key in ("eval_loss", "kl_divergence"):
        assert runs[0][key] == runs[1][key]
    first, second = (Store(tmp_path / str(i)).find(config) for i in range(2))
    np.testing.assert_array_equal(first.loss_history(), second.loss_history())
    np.testing.assert_array_equal(first.samples(), second.samples())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it)")
@pytest.mark.parametrize("variant", ["baseline", "adaptive"])
def test_cuda_graph_step_gives_the_eager_numbers(variant):
    """The step replayed as a CUDA graph computes exactly what the eager step computes."""
    config = TrainConfig(dataset="moons", variant=variant, steps=300, n_points=4000)  # short last batches
    runs = [fit(config, "cuda", cuda_graph=graph) for graph in (False, True)]
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)
    for a, b in zip(runs[0].ema.parameters(), runs[1].ema.parameters()):
        assert torch.equal(a, b)


def test_cuda_graph_needs_cuda():
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        next(train(TrainConfig(**SMALL), "cpu", cuda_graph=True))


def test_baseline_and_fixed_and_kl_weight_train(tmp_path):
    s = Store(tmp_path)
    for cfg in (TrainConfig(dataset="line", variant="baseline", **SMALL),
                TrainConfig(dataset="circle", variant="fixed", kl_weight=0.1, beta_schedule="quadratic", **SMALL),
                TrainConfig(dataset="star", variant="adaptive", weight_net="softmax", **SMALL)):
        run = s.get(final(run_config(cfg, s, "cpu"))["run_id"])
        assert np.isfinite(run.metrics["kl_divergence"])
        alpha = run.alpha()
        if cfg.variant == "baseline":
            assert alpha is None
        elif cfg.variant == "fixed":
            assert np.all(alpha == 0.5)


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,match", [
    (dict(steps=0), "steps must be > 0"), (dict(batch_size=-1), "batch_size must be > 0"),
    (dict(lr=0.0), "lr must be > 0"), (dict(n_points=0), "n_points must be > 0"),
    (dict(dataset="nope"), "unknown dataset 'nope'"), (dict(variant="big"), "unknown variant"),
    (dict(batch_size=512, n_points=100), "exceeds n_points"), (dict(steps=1.5), "whole number"),
    (dict(weight_net="relu"), "unknown weight_net"), (dict(lr=float("inf")), "lr must be > 0 and finite"),
    (dict(kl_weight=-1.0), "kl_weight must be in"), (dict(weight_decay=1.5), "weight_decay must be in"),
    (dict(seed=-3), "seed must be >= 0"), (dict(timesteps=1), "timesteps must be in")])
def test_impossible_settings_are_one_line_errors(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        TrainConfig(**bad).validate()
    assert "\n" not in str(e.value)


def test_config_hash_is_stable():
    a = TrainConfig(lr=1)
    assert a.lr == 1.0 and a.run_id == TrainConfig(lr=1.0).run_id
    assert TrainConfig.from_dict(TrainConfig().to_dict()).run_id == TrainConfig().run_id
    assert TrainConfig(seed=1).run_id != TrainConfig().run_id
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"datset": "dino"})


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            resolve_device("cuda")


def test_nan_loss_fails_cleanly(tmp_path):
    s = Store(tmp_path)
    cfg = TrainConfig(dataset="moons", variant="baseline", lr=1e9, grad_clip=1e9, steps=60, n_points=1024)
    with pytest.raises(TrainingFailed, match="loss became"):
        list(run_config(cfg, s, "cpu", every=10))
    assert s.find(cfg) is None and s.runs() == []
    assert s.progress(cfg.run_id)[-1]["event"] == "failed" and not list((tmp_path / "locks").iterdir())


def test_corrupt_and_foreign_runs_are_reported(adaptive_run, store, tmp_path):
    import shutil

    run = store.find(adaptive_run[0])
    bad = Store(tmp_path)
    shutil.copytree(run.path, tmp_path / run.id)
    weights = tmp_path / run.id / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(StoreError, match="corrupt or truncated"):
        bad.get(run.id).load_model()
    (tmp_path / run.id / "run.json").write_text("{not json")
    assert bad.runs() == [] and "unreadable" in bad.problems()[0]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text(json.dumps({"format": "someone-else/9"}))
    assert any("not a dualscale run" in p for p in bad.problems())
    assert all("\n" not in p for p in bad.problems())


def test_pickled_arrays_are_refused(adaptive_run, store, tmp_path):
    """An npz holding Python objects is never unpickled, even with a matching hash."""
    import shutil
    from dualscale.store import _sha256

    run = store.find(adaptive_run[0])
    shutil.copytree(run.path, tmp_path / run.id)
    arrays = tmp_path / run.id / "arrays.npz"
    np.savez(arrays, samples=np.array([{"evil": 1}], dtype=object))
    meta = json.loads((tmp_path / run.id / "run.json").read_text())
    meta["files"]["arrays.npz"] = _sha256(arrays)
    (tmp_path / run.id / "run.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="unreadable"):
        Store(tmp_path).get(run.id).samples()


def test_same_config_twice_is_refused_while_alive(tmp_path):
    s = Store(tmp_path)
    cfg = TrainConfig(dataset="moons", variant="baseline", **SMALL)
    holder = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "locks").mkdir()
        (tmp_path / "locks" / f"{cfg.run_id}.json").write_text(json.dumps({"run_id": cfg.run_id, "pid": holder.pid}))
        with pytest.raises(RunInProgress, match="already being trained"):
            list(run_config(cfg, s, "cpu"))
        assert [a["pid"] for a in s.active()] == [holder.pid]
    finally:
        holder.kill()
        holder.wait()
    assert s.active() == []  # the holder died: its lock is stale and is taken over
    assert final(run_config(cfg, s, "cpu"))["cached"] is False


def test_unwritable_store_fails_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot write to store"):
        list(run_config(TrainConfig(**SMALL), Store(blocker / "store"), "cpu"))


# ---- command line ---------------------------------------------------------------------------
def test_cli_train_prints_json_and_list_shows_it(cli, tmp_path):
    r = cli("train", "--dataset", "line", "--variant", "baseline", "--seed", "3", "--steps", "200",
            "--n-points", "4096", "--n-samples", "1000", "--device", "cpu", store=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) >= {"training_time", "eval_loss", "inference_time", "kl_divergence", "run_id", "path"}
    assert "200/200" in r.stderr  # the tqdm bar
    listing = cli("list", store=tmp_path)
    assert out["run_id"] in listing.stdout


@pytest.mark.parametrize("args,message", [
    (["train", "--dataset", "nope"], "error: unknown dataset 'nope'"),
    (["train", "--steps", "0"], "error: steps must be > 0"),
    (["train", "--lr", "-1"], "error: lr must be > 0"),
    (["train", "--device", "tpu"], "error: unknown device 'tpu'"),
    (["reproduce", "--variants", "huge"], "error: unknown variant 'huge'"),
    (["reproduce", "--jobs", "0"], "error: --jobs must be >= 1, got 0"),
    (["train", "--threads", "0"], "error: --threads must be >= 1, got 0"),
    (["train", "--config", "{bad"], "error: the config is not valid JSON"),
    (["train", "--config", '{"dataset": "moons", "step": 5}'], "error: unknown config keys ['step']"),
])
def test_cli_bad_input_is_one_line(cli, tmp_path, args, message):
    r = cli(*args, store=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(message)
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_unwritable_store(cli, tmp_path):
    (tmp_path / "f").write_text("")
    r = cli("train", "--steps", "10", store=tmp_path / "f" / "store")
    assert r.returncode == 2 and r.stderr.startswith("error: cannot write to store")


def test_cli_killed_or_cancelled_run_leaves_no_finished_run(tmp_path):
    args = [sys.executable, "-m", "dualscale", "train", "--dataset", "moons", "--variant", "baseline",
            "--steps", "100000", "--device", "cpu", "--store", str(tmp_path)]
    cfg = TrainConfig(dataset="moons", variant="baseline", steps=100000)
    for sig, code in ((signal.SIGTERM, 130), (signal.SIGKILL, -9)):
        p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not (
                Store(tmp_path).active() and [e for e in Store(tmp_path).progress(cfg.run_id) if e["event"] == "progress"]):
            time.sleep(0.2)
        assert Store(tmp_path).active()[0]["pid"] == p.pid
        p.send_signal(sig)
        p.communicate(timeout=30)
        assert p.returncode == code
        assert Store(tmp_path).find(cfg) is None and Store(tmp_path).runs() == []
        assert not [x for x in tmp_path.iterdir() if x.name.startswith(".tmp")]
    assert Store(tmp_path).active() == []


def test_cli_reproduce_writes_tables(cli, tmp_path):
    r = cli("reproduce", "--datasets", "moons", "line", "--variants", "baseline", "adaptive", "--steps", "100",
            "--n-points", "2048", "--n-samples", "500", "--device", "cpu", store=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    tables = tmp_path / "tables"
    assert (tables / "tables.md").read_text().count("| moons |") == 2
    import pandas as pd

    base = pd.read_csv(tables / "baseline.csv")
    assert list(base.dataset) == ["line", "moons"]  # the paper's order
    assert base["Eval Loss paper"].tolist() == [0.804, 0.616]
    np.testing.assert_allclose(base["Eval Loss diff"], base["Eval Loss"] - base["Eval Loss paper"])
    assert len(pd.read_csv(tables / "runs.csv")) == 4
    again = cli("reproduce", "--datasets", "moons", "--variants", "baseline", "--steps", "100",
                "--n-points", "2048", "--n-samples", "500", "--device", "cpu", store=tmp_path)
    assert again.returncode == 0 and "sampling" not in again.stderr  # loaded, not retrained


def test_light_runs_keep_samples_alpha_losses_and_metrics(adaptive_run, store, tmp_path):
    """A light copy (the shipped seeds past 0): no weights, no trajectory; every number recomputable."""
    from dualscale import kl_divergence, make_dataset

    run = store.find(adaptive_run[0])
    Store(tmp_path).save_light(run, root=tmp_path / "reference")
    light = Store(tmp_path).find(run.config)
    assert light.is_reference and light.light and not run.light
    assert light.metrics == run.metrics and light.made == run.made and run.made["half"] is False
    np.testing.assert_array_equal(light.samples(), run.samples())
    np.testing.assert_array_equal(light.alpha(), run.alpha())
    np.testing.assert_allclose(light.loss_history(), run.loss_history(), rtol=1e-3)  # float16 history
    assert light.trajectory() is None
    with pytest.raises(StoreError, match="ships without weights"):
        light.load_model()
    real = make_dataset(run.config.dataset, run.config.n_points)
    assert kl_divergence(real, light.samples()) == light.metrics["kl_divergence"]
    assert sum(f.stat().st_size for f in light.path.iterdir()) < 120_000


def test_rescore_fills_missing_metrics_from_stored_samples(adaptive_run, store, tmp_path):
    import shutil

    from dualscale.metrics import recall
    from dualscale.runs import rescore

    run = store.find(adaptive_run[0])
    shutil.copytree(run.path, tmp_path / run.id)
    meta = json.loads((tmp_path / run.id / "run.json").read_text())
    del meta["metrics"]["recall"]  # as a run stored before the metric existed
    (tmp_path / run.id / "run.json").write_text(json.dumps(meta))
    done = list(rescore(Store(tmp_path)))
    assert [list(values) for _, values in done] == [["recall"]]
    assert Store(tmp_path).get(run.id).metrics["recall"] == run.metrics["recall"] == recall(
        np.asarray(__import__("dualscale").make_dataset("moons", run.config.n_points)), run.samples())
    assert list(rescore(Store(tmp_path))) == []  # nothing left to do


def test_cli_export_writes_light_copies_once(cli, adaptive_run, store, tmp_path):
    r = cli("export", "--to", tmp_path / "reference", store=store.root)
    assert r.returncode == 0, r.stderr
    light = Store(tmp_path).find(adaptive_run[0])
    assert light.light and light.is_reference and light.made["half"] is False
    assert light.made["command"].startswith("python -m dualscale train --config '")  # not the reference settings
    before = (light.path / "run.json").stat().st_mtime_ns
    assert cli("export", "--to", tmp_path / "reference", store=store.root).returncode == 0
    assert (light.path / "run.json").stat().st_mtime_ns == before  # an unchanged run is not written again
