"""One record of a finished run, whichever engine made it (dualscale/record.py): the same fields
from a single run and a stacked one, eval loss per timestep, the machine, the oracle stream."""
import numpy as np
import pytest
import torch

from dualscale import Store, TrainConfig
from dualscale.record import Record, lighten
from dualscale.runs import engine_code, rescore, run_config
from dualscale.stack_sweep import run_stacks
from support import write_run_json

TINY = dict(steps=120, n_points=2000, n_samples=500)


def _fields(run):
    # a stacked run also says how many runs shared its step; a single run the seconds of its own
    # evaluation phases (a stack's phases are shared by its runs: estimates.py derives them)
    made = {k for k in run.made if k not in ("stack", "phases")}
    return set(run.metrics), set(run._arrays("arrays.npz")), made, set(run.files)


@pytest.mark.parametrize("light", [False, True])
def test_single_and_stacked_runs_store_the_same_fields(tmp_path, light):
    single, stacked = Store(tmp_path / "single"), Store(tmp_path / "stacked")
    config = TrainConfig(dataset="moons", variant="adaptive", seed=3, **TINY)
    list(run_config(config, single, "cpu", light=light))
    list(run_stacks([config], stacked, torch.device("cpu"), light=light, command="cmd", jobs=1))
    a, b = single.find(config), stacked.find(config)
    assert _fields(a) == _fields(b)
    assert {"eval_loss_by_t", "samples", "alpha", "losses"} <= _fields(a)[1]
    assert a.light == b.light == light and a.made["light"] is light
    if light:
        assert a.samples().dtype == np.float32 and a._arrays("arrays.npz")["samples"].dtype == np.float16
        assert "trajectory" not in _fields(a)[1] and "weights.npz" not in a.files
    assert (a.made["engine"]["name"], b.made["engine"]["name"]) == ("single", "stacked")  # each names its engine
    assert a.made["engine"]["code"] == b.made["engine"]["code"] == engine_code() and len(engine_code()) == 12
    machine = a.made["machine"]
    assert machine == b.made["machine"] and machine["cpu"] and "cpu_capability" in machine and "flags" in machine
    # the same draws per run: the fixed evaluation set gives the two engines the same per-t losses
    np.testing.assert_allclose(a._arrays("arrays.npz")["eval_loss_by_t"], b._arrays("arrays.npz")["eval_loss_by_t"],
                               rtol=1e-4)


def test_eval_loss_by_t_has_T_values_whose_mean_is_the_eval_loss(tmp_path):
    config = TrainConfig(dataset="moons", variant="fixed", steps=300, n_points=20_000, n_samples=500)
    store = Store(tmp_path)
    list(run_config(config, store, "cpu"))
    run = store.find(config)
    by_t = run._arrays("arrays.npz")["eval_loss_by_t"]
    assert by_t.shape == (config.timesteps,) and np.all(by_t > 0)
    # The eval loss: 20,000 points with fresh t and noise; by_t: 1,000 fixed points at each of the
    # 100 t. Both estimate the same mean (t uniform); each squared error has an sd of about 1, so
    # their difference has an sd of about 0.008: 0.03 is ~4 sd.
    assert abs(by_t.mean() - run.metrics["eval_loss"]) < 0.03
    assert by_t[0] > by_t[-1]  # predicting the noise is hardest at low noise


def test_rescore_draws_the_oracle_start_the_run_drew(tmp_path):
    """kl_oracle_start comes from a stream that depends on the run's seed alone: rescore gives the
    number recorded at training, bit for bit."""
    import json

    store = Store(tmp_path)
    config = TrainConfig(dataset="circle", variant="baseline", seed=5, **TINY)
    list(run_config(config, store, "cpu"))
    run = store.find(config)
    meta = json.loads((run.path / "run.json").read_text())
    recorded = meta["metrics"].pop("kl_oracle_start")
    write_run_json(run.path, meta)
    assert [v for _, v in rescore(store)] == [{"kl_oracle_start": recorded}]


def test_lighten_drops_the_trajectory_and_keeps_block_means():
    arrays = {"samples": np.zeros((5, 2), np.float32), "losses": np.arange(250, dtype=np.float32),
              "traj_t": np.arange(3), "trajectory": np.zeros((3, 2, 2)), "eval_loss_by_t": np.ones(100), "alpha": None}
    light = lighten(arrays)
    assert set(light) == {"samples", "losses", "loss_block", "eval_loss_by_t"}
    np.testing.assert_allclose(light["losses"], [49.5, 149.5, 224.5])
    assert lighten(light)["losses"] is light["losses"]  # already light: unchanged


def test_rescore_check_recomputes_every_metric_and_reports_what_differs(tmp_path, cli):
    import json

    store = Store(tmp_path)
    config = TrainConfig(dataset="line", variant="fixed", seed=2, **TINY)
    list(run_config(config, store, "cpu"))
    same = cli("rescore", "--check", store=tmp_path)
    assert same.returncode == 0 and "1 runs checked: 0 stored metric(s) differ" in same.stdout
    run = store.find(config)
    meta = json.loads((run.path / "run.json").read_text())
    meta["metrics"]["precision"] += 0.01  # stored by a faulty writer, digest and all
    write_run_json(run.path, meta)
    differs = cli("rescore", "--check", store=tmp_path)
    assert differs.returncode == 1 and f"differs: {run.id} precision: stored" in differs.stdout
    assert "1 stored metric(s) differ" in differs.stdout
    nothing = cli("rescore", store=tmp_path)
    assert nothing.returncode == 0 and "nothing to rescore" in nothing.stdout


@pytest.mark.parametrize("variant", ["baseline", "fixed", "adaptive"])
def test_the_branch_view_mix_is_the_models_output(variant):
    from dualscale.inside import branch_field
    from dualscale.models import build_model
    from dualscale.train import make_schedule

    torch.manual_seed(0)
    config = TrainConfig(dataset="moons", variant=variant)
    model, schedule = build_model(config).eval(), make_schedule(config)
    with torch.no_grad():  # a trained-like alpha(t) that is not 0.5 everywhere
        if variant == "adaptive":
            for p in model.weight_net.parameters():
                p.add_(0.3 * torch.randn_like(p))
    for t in (0, 37, 99):
        field = branch_field(model, schedule, t, lim=4.0, n=9)
        x = torch.from_numpy(field["grid"])
        expected = schedule.predict_x0(x, model(x, t), t).detach().numpy()
        np.testing.assert_allclose(field["mix"], expected, rtol=1e-5, atol=1e-5)
        if variant != "baseline":
            a = field["alpha"]
            np.testing.assert_allclose(field["mix"], a * field["global"] + (1 - a) * field["local"], rtol=1e-4, atol=1e-4)
            assert variant == "adaptive" or a == 0.5
        else:
            assert set(field) == {"grid", "alpha", "mix"}


def test_per_timestep_differences_pair_by_seed():
    from dualscale.inside import per_timestep

    a = {s: np.full(4, 1.0 + 0.1 * s) for s in range(5)}
    b = {s: np.full(4, 1.0 + 0.1 * s) - [0.0, 0.01, 0.02, 0.03] for s in range(6)}
    d = per_timestep(a, b)
    assert d["seeds"] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(d["mean"], [0.0, 0.01, 0.02, 0.03])
    np.testing.assert_allclose(d["low"], d["mean"]) and np.testing.assert_allclose(d["high"], d["mean"])
    assert per_timestep({0: np.ones(3)}, {0: np.ones(3)}) is None


def test_rescore_adds_eval_loss_by_t_to_a_run_with_weights_that_lacks_it(tmp_path):
    import json

    store = Store(tmp_path)
    config = TrainConfig(dataset="moons", variant="adaptive", seed=4, **TINY)
    list(run_config(config, store, "cpu"))
    recorded = store.find(config).eval_loss_by_t()
    run = store.find(config)  # as a run stored before the per-timestep loss existed
    arrays = {k: v for k, v in run._arrays("arrays.npz").items() if k != "eval_loss_by_t"}
    store.save(config, Record(run.metrics, arrays, run.state_dicts(), run.made), created=run.created)
    assert store.find(config).eval_loss_by_t() is None
    done = list(rescore(store))
    assert [list(v) for _, v in done] == [["eval_loss_by_t"]]
    again = store.find(config).verify()
    np.testing.assert_allclose(again.eval_loss_by_t(), recorded, rtol=1e-6)  # the same fixed set, the same weights
    assert json.loads((again.path / "run.json").read_text())["digest"]
    assert list(rescore(store)) == []
