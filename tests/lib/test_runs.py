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
from support import ROOT, write_run_json
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
    phases = [e["name"] for e in events if e["event"] == "phase"]
    assert phases == ["eval loss", "sampling", "oracle sampling", "metrics", "saving"]  # after training, each phase announced
    names = [e["event"] for e in events]
    assert names.index("evaluating") > names.index("progress") and names[-1] == "done"
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
    assert torch.equal(runs[0].losses, runs[1].losses) and torch.equal(runs[0].ema_flat, runs[1].ema_flat)


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
    (dict(steps=0), "steps must be in 1.."), (dict(batch_size=-1), "batch_size must be > 0"),
    (dict(lr=0.0), "lr must be > 0"), (dict(n_points=0), "n_points must be >= 10"),
    (dict(dataset="nope"), "unknown dataset 'nope'"), (dict(variant="big"), "unknown variant"),
    (dict(batch_size=512, n_points=100), "exceeds n_points"), (dict(steps=1.5), "whole number"),
    (dict(weight_net="relu"), "unknown weight_net"), (dict(lr=float("inf")), "lr must be > 0 and finite"),
    (dict(kl_weight=-1.0), "kl_weight must be in"), (dict(weight_decay=1.5), "weight_decay must be in"),
    (dict(seed=-3), "seed must be in 0..9223372036854775807"), (dict(timesteps=1), "timesteps must be in")])
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
    assert bad.runs() == [] and bad.problems()[0] == f"{run.id}: run.json is not valid JSON (JSONDecodeError); " \
        "delete the folder to retrain"
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
    write_run_json(tmp_path / run.id, meta)
    with pytest.raises(StoreError, match="unreadable"):
        Store(tmp_path).get(run.id).samples()


HOLD = """
import sys, time
from dualscale import Store, TrainConfig
with Store(sys.argv[1]).lock(TrainConfig.from_json(sys.argv[2])):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold_lock(root, cfg, seconds=60):
    """A real other process that holds the config's lock (as a worker does while it trains)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(root), cfg.to_json(), str(seconds)], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_same_config_twice_is_refused_while_alive(tmp_path):
    s = Store(tmp_path)
    cfg = TrainConfig(dataset="moons", variant="baseline", **SMALL)
    holder = hold_lock(tmp_path, cfg)
    try:
        with pytest.raises(RunInProgress, match="already being trained"):
            list(run_config(cfg, s, "cpu"))
        (info,) = s.active()
        assert info["pid"] == holder.pid and info["host"] and info["proc_start"]
    finally:
        holder.kill()
        holder.wait()
    assert s.active() == []  # killed (SIGKILL): the kernel dropped its flock, the lock is free
    assert final(run_config(cfg, s, "cpu"))["cached"] is False


def test_a_lock_naming_a_live_unrelated_process_blocks_nothing(tmp_path):
    """After a reboot a PID is reused: a lock file that merely names a live process is not held."""
    s = Store(tmp_path)
    cfg = TrainConfig(dataset="moons", variant="baseline", **SMALL)
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "locks").mkdir()
        (tmp_path / "locks" / f"{cfg.run_id}.json").write_text(json.dumps(
            {"run_id": cfg.run_id, "pid": unrelated.pid, "config": cfg.to_dict(), "started": 0}))
        assert s.active() == []
        from dualscale.runner import Runner
        assert not Runner(s).cancel(cfg.run_id) and unrelated.poll() is None  # never signalled
        with s.lock(cfg):
            assert [a["pid"] for a in s.active()] == [os.getpid()]
    finally:
        unrelated.kill()
        unrelated.wait()


RACE = """
import sys, time
from dualscale import RunInProgress, Store, TrainConfig
store, cfg = Store(sys.argv[1]), TrainConfig.from_json(sys.argv[2])
while time.time() < float(sys.argv[3]):
    pass
try:
    with store.lock(cfg):
        start = time.time()
        time.sleep(0.3)
        print(f"held {start} {time.time()}")
except RunInProgress:
    print("refused")
"""


def test_processes_racing_for_one_lock_never_both_hold_it(tmp_path):
    """Eight processes released at the same instant, three rounds: at most one holds the lock at a time."""
    cfg = TrainConfig(dataset="moons", variant="baseline", **SMALL)
    for _ in range(3):
        go = time.time() + 2.0
        procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), cfg.to_json(), str(go)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True) for _ in range(8)]
        outs = [p.communicate(timeout=60)[0].split() for p in procs]
        spans = sorted((float(o[1]), float(o[2])) for o in outs if o[0] == "held")
        assert spans and all(b[0] >= a[1] for a, b in zip(spans, spans[1:])), spans  # no overlap
        assert len(spans) + sum(o == ["refused"] for o in outs) == 8


def test_progress_writes_do_not_follow_symlinks(tmp_path):
    s = Store(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "progress").mkdir()
    (tmp_path / "progress" / "x.jsonl").symlink_to(victim)
    with pytest.raises(StoreError, match="symlink"):
        s.start_progress("x")
    with pytest.raises(StoreError, match="symlink"):
        s.append_progress("x", {"event": "progress"})
    assert victim.read_text() == "precious"


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
    (["train", "--steps", "0"], "error: steps must be in 1..100000000, got 0"),
    (["train", "--lr", "-1"], "error: lr must be > 0"),
    (["train", "--device", "tpu"], "error: unknown device 'tpu'"),
    (["reproduce", "--variants", "huge"], "error: unknown variant 'huge'"),
    (["reproduce", "--jobs", "0"], "error: --jobs must be in 1..256, got 0"),
    (["reproduce", "--jobs", "20000"], "error: --jobs must be in 1..256, got 20000"),
    (["train", "--threads", "0"], "error: --threads must be in 1..1024, got 0"),
    (["train", "--threads", "100000000000"], "error: --threads must be in 1..1024, got 100000000000"),
    (["train", "--config", "[" * 30_000 + "]" * 30_000], "error: the config is nested too deeply"),
    (["train", "--n-points", "50000000", "--batch-size", "50000000"], "error: this run needs about"),
    (["reproduce", "--datasets", "line", "--variants", "baseline", "--cluster", "ucx://127.0.0.1:1"],
     "error: cannot connect to a Dask scheduler at 'ucx://127.0.0.1:1'"),
    (["train", "--config", "{bad"], "error: the config is not valid JSON"),
    (["train", "--steps", "1180591620717411303424"], "error: steps must be in 1..100000000"),
    (["train", "--steps", "90000000", "--n-points", "200000000"], "error: this run needs about"),
    (["train", "--n-points", "1000000000000"], "error: this run needs about"),
    (["train", "--n-samples", "1000000000"], "error: this run needs about"),
    (["train", "--seed", "99999999999999999999"], "error: seed must be in 0..9223372036854775807"),
    (["train", "--n-points", "5", "--batch-size", "5", "--n-samples", "10"], "error: n_points must be >= 10"),
    (["train", "--previews", "-3"], "error: --previews must be in 0..10000"),
    (["list"], "error: no run store at"),
    (["train", "--config", '{"dataset": "moons", "step": 5}'], "error: unknown config keys ['step']"),
])
def test_cli_bad_input_is_one_line(cli, tmp_path, args, message):
    r = cli(*args, store=tmp_path / "store" if args == ["list"] else tmp_path)
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
    assert base.columns[2:4].tolist() == ["Training Time (s)", "Training Time (s) sd"]
    assert {"KL Divergence (bits)", "KL Divergence (bits) paper", "KL Divergence (bits) diff"} <= set(base.columns)
    runs = pd.read_csv(tables / "runs.csv")  # units in the names: the CSV is read without our registry
    assert len(runs) == 4 and {"training_time_s", "inference_time_s", "kl_divergence_bits", "eval_loss"} <= set(runs.columns)
    assert "kl_divergence" not in runs.columns and (runs.kl_divergence_bits > 0).all()
    again = cli("reproduce", "--datasets", "moons", "--variants", "baseline", "--steps", "100",
                "--n-points", "2048", "--n-samples", "500", "--device", "cpu", store=tmp_path)
    assert again.returncode == 0 and "sampling" not in again.stderr  # loaded, not retrained


def test_light_runs_keep_samples_alpha_losses_and_metrics(adaptive_run, store, tmp_path):
    """A light copy (the shipped seeds past 0): no weights, no trajectory; every number recomputable."""
    from dualscale import kl_divergence, make_dataset

    run = store.find(adaptive_run[0])
    Store(tmp_path).save_light(run, root=tmp_path / "reference")
    light = Store(tmp_path).find(run.config)
    assert light.shipped and light.light and not run.light
    assert light.metrics == run.metrics and light.made == {**run.made, "light": True} and run.made["half"] is False
    np.testing.assert_array_equal(light.samples(), run.samples())
    np.testing.assert_array_equal(light.alpha(), run.alpha())
    np.testing.assert_array_equal(light._arrays("arrays.npz")["eval_loss_by_t"], run._arrays("arrays.npz")["eval_loss_by_t"])
    full = run.loss_history()  # the light history: 100-step means, each step reading its block's mean
    np.testing.assert_allclose(light.loss_history(), np.repeat(full.reshape(-1, 100).mean(1), 100), rtol=1e-5)
    assert light.trajectory() is None
    with pytest.raises(StoreError, match="ships without weights"):
        light.load_model()
    real = make_dataset(run.config.dataset, run.config.n_points)
    assert kl_divergence(real, light.samples()) == light.metrics["kl_divergence"]
    assert sum(f.stat().st_size for f in light.path.iterdir()) < 120_000


def test_stored_runs_read_like_any_other_file(adaptive_run, store, tmp_path):
    """Runs are written under temporary names (mkdtemp/mkstemp make those 0700/0600); the stored
    folder and its files get the permissions of the umask, so a store shared by a group reads."""
    import stat

    from dualscale.store import _UMASK

    light = Store(tmp_path).save_light(store.find(adaptive_run[0]))
    assert stat.S_IMODE(light.path.stat().st_mode) == 0o777 & ~_UMASK
    assert {stat.S_IMODE(f.stat().st_mode) for f in light.path.iterdir()} == {0o666 & ~_UMASK}


def test_rescore_fills_missing_metrics_from_stored_samples(adaptive_run, store, tmp_path):
    import shutil

    from dualscale.metrics import recall
    from dualscale.runs import rescore

    run = store.find(adaptive_run[0])
    shutil.copytree(run.path, tmp_path / run.id)
    meta = json.loads((tmp_path / run.id / "run.json").read_text())
    del meta["metrics"]["recall"]  # as a run stored before the metric existed
    write_run_json(tmp_path / run.id, meta)
    done = list(rescore(Store(tmp_path)))
    assert [list(values) for _, values in done] == [["recall"]]
    assert Store(tmp_path).get(run.id).metrics["recall"] == run.metrics["recall"] == recall(
        np.asarray(__import__("dualscale").make_dataset("moons", run.config.n_points)), run.samples())
    assert list(rescore(Store(tmp_path))) == []  # nothing left to do


def test_cli_export_writes_light_copies_once(cli, adaptive_run, store, tmp_path):
    r = cli("export", "--to", tmp_path / "reference", store=store.root)
    assert r.returncode == 0, r.stderr
    light = Store(tmp_path).find(adaptive_run[0])
    assert light.light and light.shipped and light.made["half"] is False
    assert light.made["command"].startswith("python -m dualscale train --config '")  # not the reference settings
    before = (light.path / "run.json").stat().st_mtime_ns
    assert cli("export", "--to", tmp_path / "reference", store=store.root).returncode == 0
    assert (light.path / "run.json").stat().st_mtime_ns == before  # an unchanged run is not written again


def test_damaged_or_malformed_runs_are_one_line_and_the_rest_still_show(cli, adaptive_run, store, tmp_path):
    import shutil

    run = store.find(adaptive_run[0])
    other = TrainConfig(dataset="line", variant="baseline", steps=60, n_points=512, batch_size=64, n_samples=100)
    for _ in run_config(other, Store(tmp_path), "cpu"):
        pass
    shutil.copytree(run.path, tmp_path / run.id)
    listed = cli("list", store=tmp_path)
    assert listed.returncode == 0 and run.id in listed.stdout and other.run_id in listed.stdout
    # a truncated payload: list flags it, train of that config refuses it in one line naming --force
    arrays = tmp_path / run.id / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:500])
    listed = cli("list", store=tmp_path)
    assert f"damaged: run {run.id}: arrays.npz is damaged" in listed.stderr and other.run_id in listed.stdout
    again = cli("train", "--config", run.config.to_json(), "--device", "cpu", store=tmp_path)
    assert again.returncode == 2 and again.stderr.strip().endswith("retrain it with --force")
    assert len(again.stderr.strip().splitlines()) == 1
    arrays.unlink()  # deleted: the same
    assert "arrays.npz is missing" in cli("list", store=tmp_path).stderr
    # an edit in place (no new digest): caught as an edit
    meta = json.loads((tmp_path / run.id / "run.json").read_text())
    meta["metrics"]["kl_divergence"] = 0.0001
    (tmp_path / run.id / "run.json").write_text(json.dumps(meta))
    assert f"unreadable: {run.id}: run.json was edited after it was written" in cli("list", store=tmp_path).stderr
    # a metric that is not a number, written with its digest (a faulty writer): that run is one
    # line, every other run still lists
    from dualscale.store import _digest

    def write(meta):
        meta.pop("digest", None)
        (tmp_path / run.id / "run.json").write_text(json.dumps({**meta, "digest": _digest(meta)}))

    meta["metrics"]["kl_divergence"] = "0.3"
    write(meta)
    listed = cli("list", store=tmp_path)
    assert listed.returncode == 0 and other.run_id in listed.stdout and run.id not in listed.stdout
    assert "metric 'kl_divergence' is '0.3', not a finite number" in listed.stderr
    del meta["metrics"]["eval_loss"]
    write(meta)
    assert "metric 'eval_loss' is missing" in cli("list", store=tmp_path).stderr


def test_reproduce_out_is_relative_to_the_current_folder(tmp_path):
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "dualscale", "reproduce", "--datasets", "line", "--variants", "baseline",
                        "--steps", "30", "--n-points", "512", "--batch-size", "64", "--n-samples", "100",
                        "--device", "cpu", "--store", "store", "--out", "tables-here"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tables-here" / "tables.md").is_file() and not (tmp_path / "store" / "tables-here").exists()


def test_the_bar_counts_training_steps_only(cli, tmp_path):
    args = ["train", "--dataset", "line", "--variant", "baseline", "--steps", "300", "--n-points", "2048",
            "--n-samples", "3000", "--device", "cpu"]
    r = cli(*args, store=tmp_path)
    assert r.returncode == 0, r.stderr
    bar = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if "300/300" in ln][-1]
    rate = float(bar.split("step/s")[0].split()[-1].rstrip("]").split(",")[-1])
    seconds = json.loads(r.stdout.strip().splitlines()[-1])["training_time"]
    assert rate == pytest.approx(300 / seconds, rel=0.35)  # not diluted by the sampling after it
    assert "evaluating 2/5: sampling" in r.stderr
    cached = cli(*args, store=tmp_path)
    assert "300/300" not in cached.stderr and "loaded, not retrained" in cached.stderr
