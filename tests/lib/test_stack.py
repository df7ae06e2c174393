"""Stacked runs (issues 12, 25): many runs in one loop, each with its own everything; row by row on
a CPU (exactly the run alone), one vmapped step on a GPU."""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dualscale import Store, TrainConfig, make_dataset
from dualscale.metrics import kl_divergence
from dualscale.evaluate import evaluate
from dualscale.record import block_means
from dualscale.stack_sweep import run_stacks, score_tasks, stacks_of
from dualscale.events import drain
from dualscale.train import DrawsDiffer, check_draws, group_key, make_groups, train
from dualscale.runs import run_config

STEPS = dict(steps=300, n_points=5000, n_samples=2000)
CONFIGS = [TrainConfig(dataset=d, variant=v, seed=s, **STEPS)
           for d, v, s in (("dino", "baseline", 0), ("dino", "fixed", 0), ("dino", "adaptive", 0), ("moons", "adaptive", 1))]




@pytest.fixture(scope="module")
def stacked_and_alone(tmp_path_factory):
    """Each config's (eval loss, KL, loss history): stacked and vmapped (a GPU's way, forced here on
    the CPU), and trained alone."""
    torch.set_num_threads(2)
    out = {"vmapped": stacked_runs(CONFIGS, batched=True)}
    store = Store(tmp_path_factory.mktemp("alone"))
    out["alone"] = {}
    for c in CONFIGS:
        final = list(run_config(c, store, "cpu"))[-1]
        out["alone"][c.run_id] = (final["eval_loss"], final["kl_divergence"], store.find(c).loss_history())
    return out


def stacked_runs(configs, batched=None) -> dict:
    out = {}
    for group in drain(train(configs, "cpu", batched=batched)):
        for i, (c, ev) in enumerate(zip(group.configs, drain(evaluate(group, keep=0, score=False)))):
            out[c.run_id] = (ev.eval_loss, kl_divergence(make_dataset(c.dataset, c.n_points), ev.samples),
                             group.losses[i].cpu().numpy())
    return out


def test_stacked_runs_on_a_cpu_are_exactly_the_runs_alone(tmp_path):
    """Row by row (the CPU's way), a stacked run is its run alone bit for bit: a second row of a
    group (moons) as much as the first, and a group beside another."""
    configs = [TrainConfig(dataset=d, variant=v, seed=s, steps=60, n_points=1000, n_samples=400)
               for d, v, s in (("dino", "adaptive", 0), ("moons", "adaptive", 1), ("line", "baseline", 2))]
    stacked, store = stacked_runs(configs), Store(tmp_path)
    for c in configs:
        final = list(run_config(c, store, "cpu"))[-1]
        loss, kl, hist = stacked[c.run_id]
        assert (loss, kl) == (final["eval_loss"], final["kl_divergence"]), c.run_id
        np.testing.assert_array_equal(hist, store.find(c).loss_history())


def test_vmapped_runs_agree_with_runs_trained_alone(stacked_and_alone):
    """300 steps: eval loss within 0.005 and KL within 0.05 of the same config trained alone, and
    the first steps' losses equal to float rounding (the same batches, t and noise; autograd's
    gradients instead of the hand-written ones)."""
    for c in CONFIGS:
        (loss_s, kl_s, hist_s), (loss_a, kl_a, hist_a) = stacked_and_alone["vmapped"][c.run_id], stacked_and_alone["alone"][c.run_id]
        assert abs(loss_s - loss_a) < 0.005, c.run_id
        assert abs(kl_s - kl_a) < 0.05, c.run_id
        np.testing.assert_allclose(hist_s[:5], hist_a[:5], rtol=1e-5)
        assert not np.array_equal(hist_s, hist_a)  # the vmapped path really ran


def test_groups_split_by_settings_and_stacks_by_steps():
    configs = CONFIGS + [TrainConfig(dataset="line", variant="baseline", steps=100, n_points=5000)]
    assert len({group_key(c) for c in configs}) == 4  # baseline, fixed, adaptive (300 steps), baseline (100)
    assert [len(s) for s in stacks_of(configs)] == [4, 1]
    with pytest.raises(ValueError, match="one step count"):
        drain(train(configs, "cpu"))


def test_light_stacked_runs_store_float16_samples_whose_metrics_recompute(tmp_path):
    configs = [TrainConfig(dataset="moons", variant=v, seed=0, steps=120, n_points=2000, n_samples=500)
               for v in ("baseline", "adaptive")]
    store = Store(tmp_path)
    events = list(run_stacks(configs, store, torch.device("cpu"), light=True, command="cmd", jobs=1))
    done = [e["run_id"] for e in events if e["event"] == "done"]
    assert sorted(done) == sorted(c.run_id for c in configs) and events[0]["event"] == "progress"
    for c in configs:
        run = store.find(c)
        assert run.light and run.made["stack"] == 2 and run.made["samples"] == "float16"
        samples = run.samples()
        assert np.array_equal(samples, samples.astype(np.float16).astype(np.float32))
        real = make_dataset(c.dataset, c.n_points)
        assert kl_divergence(real, samples) == run.metrics["kl_divergence"]  # recomputable from what ships
        assert len(run.loss_history()) == c.steps and {"kl_oracle_start", "start_mismatch"} <= set(run.metrics)


def test_block_means():
    np.testing.assert_allclose(block_means(np.arange(250, dtype=np.float32), 100), [49.5, 149.5, 224.5])


def test_tf32_is_refused_on_a_cpu_and_bf16_trains():
    with pytest.raises(ValueError, match="tf32 is a CUDA"):
        drain(train([TrainConfig(compute_precision="tf32", steps=5)], "cpu"))
    group = drain(train([TrainConfig(dataset="moons", compute_precision="bf16", steps=30, n_points=1000)], "cpu"))[0]
    assert torch.isfinite(group.losses).all() and not group.manual  # bf16: autograd, not the hand-written backward


def _stack_after_one_step(configs):
    groups = make_groups(configs, torch.device("cpu"))
    for g in groups:
        g.new_pass()
        g.step(*g.draw(configs[0].batch_size))  # the optimizer has state, as when a capture is checked
    return groups


def test_check_draws_accepts_the_eager_draws_catches_a_shifted_stream_and_puts_everything_back():
    """The check a captured step passes before its first real replay: its draws must be the eager
    step's, and checking must leave no trace (the next step equals that of an unchecked stack)."""
    small = [TrainConfig(dataset=d, variant="adaptive", seed=s, steps=40, n_points=600, batch_size=64)
             for d, s in (("dino", 0), ("moons", 1))]
    b = small[0].batch_size

    def eager(stack, extra_draw=False):
        def replay():
            draws = []
            for g in stack:
                if extra_draw:  # a stream one draw ahead: what a wrongly captured generator would do
                    torch.randn(1, generator=g.gens[-1])
                draws.append(g.draw(b))
                g.step(*draws[-1])
            return draws
        return replay

    checked, plain = _stack_after_one_step(small), _stack_after_one_step(small)
    check_draws(checked, b, eager(checked))
    with pytest.raises(DrawsDiffer, match=r"draws differ from the eager step's \(moons"):
        check_draws(checked, b, eager(checked, extra_draw=True))
    for stack in (checked, plain):
        for g in stack:
            g.step(*g.draw(b))
    for gc, gp in zip(checked, plain):
        assert torch.equal(gc.flat, gp.flat) and torch.equal(gc.pos, gp.pos)
        for sc, sp in zip(gc.opt.state.values(), gp.opt.state.values()):
            assert all(torch.equal(sc[k], sp[k]) for k in sp)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_session.sh runs it)")
def test_cuda_stacked_graph_draws_and_steps_as_the_eager_stack():
    """The stacked step captured with every run's draws in the graph gives the eager stack's
    numbers exactly: the same batches, t and noise, the same kernels (short batches every pass)."""
    configs = [TrainConfig(dataset=d, variant=v, seed=s, steps=300, n_points=4000)
               for d, v, s in (("dino", "baseline", 0), ("moons", "adaptive", 1), ("line", "fixed", 2))]
    runs = []
    for graph in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs.append({c.run_id: (g.losses[i].cpu(), g.ema_flat[i].cpu())
                         for g in drain(train(configs, "cuda", cuda_graph=graph)) for i, c in enumerate(g.configs)})
        assert not [w for w in caught if "not captured" in str(w.message)]  # the graph was kept, not dropped
    for key, (losses, ema) in runs[0].items():
        assert torch.equal(losses, runs[1][key][0]) and torch.equal(ema, runs[1][key][1]), key


def test_score_tasks_keep_one_dataset_per_task_and_cover_every_run_once():
    configs = [TrainConfig(dataset=d, seed=s) for s in range(5) for d in ("dino", "moons")]
    results = [SimpleNamespace(samples=np.full((3, 2), i), oracle=None) for i in range(len(configs))]
    tasks = score_tasks(configs, results, 0.5, workers=4)  # 10 runs on 4 workers: chunks of 3
    assert sorted(i for idx, _ in tasks for i in idx) == list(range(10))
    for idx, (dataset, n_points, abar, runs) in tasks:
        assert {configs[i].dataset for i in idx} == {dataset} and len(idx) <= 3 and abar == 0.5
        assert [int(s[0, 0]) for s, _ in runs] == idx
