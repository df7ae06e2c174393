"""A stacked sweep: train configs in stacks (stack.py), evaluate each group's runs in the same
kernels (eval loss, sampling from N(0, I) and from the oracle start), score them on every CPU
core, store them. Each run's draws come from its own generator in a single run's order.
"""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.func import functional_call, vmap

from .config import TrainConfig
from .diffusion import SAMPLE_CHUNK
from .evaluate import EVAL_BATCH, EVAL_CHUNK, TRAJECTORY_POINTS, fixed_eval_set, oracle_generator
from .stack import Group, stack_key, train_stack
from .system import arithmetic, synchronize


# ---- evaluation, stacked: eval loss and sampling for a group's runs in the same kernels ----

def _forward(group: Group, params: dict, x: torch.Tensor, t) -> torch.Tensor:
    """Every run's network on its own points: x (R, N, 2), t (R, N) or one int -> (R, N, 2).

    Under enable_grad the forward takes its out-of-place path (nothing here requires grad, so no
    graph is kept): vmap has no batching rule for the in-place baddbmm_ and would loop over runs."""
    with torch.enable_grad():
        return _forward_vmapped(group, params, x, t)


def _forward_vmapped(group: Group, params: dict, x: torch.Tensor, t) -> torch.Tensor:
    if isinstance(t, int):
        return vmap(lambda p, xx: functional_call(group.template, p, (xx, t)))(params, x)
    return vmap(lambda p, xx, tt: functional_call(group.template, p, (xx, tt)))(params, x, t)


@torch.inference_mode()
def eval_losses(group: Group) -> np.ndarray:
    """evaluate.eval_loss for each run (the online weights), stacked: (R,)."""
    s, data = group.schedule, group.data
    per_sample = []
    for x0 in data.split(EVAL_BATCH * EVAL_CHUNK, dim=1):  # (R, chunk, 2)
        n = x0.shape[1]
        t = torch.stack([torch.randint(0, s.timesteps, (n,), generator=g, device=data.device) for g in group.gens])
        eps = torch.stack([torch.randn(n, 2, generator=g, device=data.device) for g in group.gens])
        out = _forward(group, group.params, s.add_noise(x0, eps, t), t).float()  # the schedule's formulas work on (R, chunk, 2)
        per_sample.append((out - s.target(x0, eps, t)).pow(2).mean(2))  # (R, chunk)
    se = torch.cat(per_sample, 1).double().cpu().numpy()  # (R, n)
    starts = np.arange(0, se.shape[1], EVAL_BATCH)
    means = np.add.reduceat(se, starts, axis=1) / np.diff(np.append(starts, se.shape[1]))
    return means.mean(1)


@torch.inference_mode()
def eval_losses_by_t(group: Group) -> np.ndarray:
    """evaluate.eval_loss_by_t for each run (the online weights), stacked: (R, T)."""
    s = group.schedule
    idx, eps = fixed_eval_set(group.data, s.timesteps)
    x0, out = group.data[:, idx], []  # (R, n, 2)
    for t in range(s.timesteps):
        tt = torch.full(x0.shape[:2], t, device=x0.device)
        pred = _forward(group, group.params, s.add_noise(x0, eps[t].expand_as(x0), tt), t).float()
        out.append((pred - s.target(x0, eps[t].expand_as(x0), tt)).pow(2).mean((1, 2)))  # (R,)
    return torch.stack(out, 1).double().cpu().numpy()


@torch.inference_mode()
def sample_stack(group: Group, n: int, keep: int = 0, start: torch.Tensor | None = None, gens=None):
    """diffusion.sample for each run (EMA weights), stacked; the same draws per run and chunking
    as a single run on this device; gens: each run's generator (default: the group's own).
    -> (samples (R, n, 2), trajectory (T+1, R, keep, 2) or None)."""
    s, dev = group.schedule, group.data.device
    gens = group.gens if gens is None else gens
    chunk = n if dev.type == "cuda" else SAMPLE_CHUNK
    if start is None:
        start = torch.stack([torch.randn(n, 2, generator=g, device=dev) for g in gens])  # (R, n, 2)
    out, frames = [], []
    for i, x in enumerate(start.split(chunk, dim=1)):
        here = min(x.shape[1], keep - i * chunk)
        fr = [x[:, :here].clone()] if here > 0 else None
        for t in range(s.timesteps - 1, -1, -1):
            pred = _forward(group, group.ema_params, x, t).float()
            noise = torch.stack([torch.randn(x.shape[1:], generator=g, device=dev) for g in gens]) if t > 0 else None
            x = s.step(pred, t, x, noise)
            if fr is not None:
                fr.append(x[:, :here].clone())
        out.append(x)
        if fr is not None:
            frames.append(torch.stack(fr))
    traj = torch.cat(frames, 2).cpu().numpy() if keep else None  # (T+1, R, keep, 2)
    return torch.cat(out, 1).cpu().numpy(), traj


def oracle_starts(group: Group, n: int, gens) -> torch.Tensor:
    """evaluate.oracle_start for each run, from its own oracle generator: (R, n, 2)."""
    s, dev = group.schedule, group.data.device
    starts = []
    for data, g in zip(group.data, gens):
        idx = torch.randint(0, len(data), (n,), generator=g, device=dev)
        eps = torch.randn(n, 2, generator=g, device=dev)
        starts.append(s.start(data[idx], eps))
    return torch.stack(starts)


def evaluate_group(group: Group, n_samples: int, training_time: float, keep: int = TRAJECTORY_POINTS):
    """Eval loss, samples (timed), oracle-start samples and alpha(t) for every run of a group.

    Returns one dict per run: {"eval_loss", "eval_loss_by_t", "inference_time", "training_time", "samples",
    "oracle", "alpha", "trajectory", "losses"}; training_time is as given (the caller's share of the stack's wall time), the
    inference time the group's sampling wall time divided by its runs."""
    dev, r = group.device, len(group.configs)
    with arithmetic(group.configs[0].compute_precision, dev):
        losses = eval_losses(group)
        by_t = eval_losses_by_t(group)
        synchronize(dev)
        t0 = time.perf_counter()
        samples, traj = sample_stack(group, n_samples, keep=min(keep, n_samples))
        synchronize(dev)
        inference = (time.perf_counter() - t0) / r
        gens = [oracle_generator(c.seed, dev) for c in group.configs]
        oracle, _ = sample_stack(group, n_samples, start=oracle_starts(group, n_samples, gens), gens=gens)
    alphas = [m.alpha_table() for m in group.emas]
    out = []
    for i in range(r):
        a = alphas[i]
        out.append({"eval_loss": float(losses[i]), "eval_loss_by_t": by_t[i], "inference_time": inference, "training_time": training_time,
                    "samples": samples[i].astype(np.float32), "oracle": oracle[i].astype(np.float32),
                    "alpha": None if a is None else a.detach().float().cpu().numpy(),
                    "trajectory": None if traj is None else traj[:, i].astype(np.float16),
                    "losses": group.losses[i].cpu().numpy()})
    return out


# ---- a stacked sweep: train, evaluate, score on the CPU cores, store ----

def stacks_of(configs: list[TrainConfig]) -> list[list[TrainConfig]]:
    """Split configs into stacks (same steps, batch size and n_points), biggest first."""
    out: dict[tuple, list[TrainConfig]] = {}
    for c in configs:
        out.setdefault(stack_key(c), []).append(c)
    return sorted(out.values(), key=len, reverse=True)


TIMED = ("training", "evaluation", "scoring", "saving")  # where a stacked sweep's time goes (timings)


def score_tasks(configs: list[TrainConfig], results: list[dict], abar: float, workers: int) -> list[tuple]:
    """metrics.score_runs tasks for a group's runs: one dataset per task (its DataCloud is built once
    per worker and task), in chunks that spread the runs over the workers. -> [(indices, args)]."""
    by_dataset: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        by_dataset.setdefault((c.dataset, c.n_points), []).append(i)
    chunk = max(1, -(-len(configs) // workers))
    return [(idx[j:j + chunk], (ds, n, abar, [(results[i]["samples"], results[i]["oracle"]) for i in idx[j:j + chunk]]))
            for (ds, n), idx in by_dataset.items() for j in range(0, len(idx), chunk)]


def run_stacks(configs: list[TrainConfig], store, device: torch.device, half: bool = False, light: bool = False,
               command: str = "", jobs: int | None = None, timings: dict | None = None):
    """Train, evaluate and store configs in stacks. Yields ("step", done, total) while training and
    ("done", config, run) as each run is stored. light: store no weights and no trajectory, and
    the samples as float16, with every sample metric computed from those stored samples.
    timings: a dict that gets the seconds spent in each of TIMED ("scoring": waiting for it; it
    runs on every CPU core while the GPU evaluates the next group)."""
    import os

    from joblib.externals.loky import get_reusable_executor

    from .runs import made_record

    timings = {} if timings is None else timings
    for phase in TIMED:
        timings.setdefault(phase, 0.0)
    workers = jobs or os.cpu_count() or 1
    executor = get_reusable_executor(max_workers=workers)  # scoring: processes (scipy holds the GIL)
    made = made_record(device, half, command, engine="stacked")
    try:
        with ThreadPoolExecutor(max_workers=min(8, workers)) as savers:  # saving: zlib releases the GIL
            yield from _stacks(configs, store, device, half, light, executor, workers, timings, made, savers)
    finally:  # the reusable scoring workers would idle on for minutes after the command returns
        executor.shutdown(wait=True)


def _stacks(configs, store, device, half, light, executor, workers, timings, made, savers):
    from .metrics import score_runs
    from .record import stored_samples

    clock = time.perf_counter

    for configs_here in stacks_of(configs):
        with contextlib.ExitStack() as locks:
            for c in configs_here:
                locks.enter_context(store.lock(c))
            t0 = clock()
            trained = yield from _train_progress(configs_here, device)
            timings["training"] += clock() - t0
            pending = []
            for group, training_time in trained:
                t0 = clock()
                if half:
                    group.flat.copy_(group.flat.half().float())
                    group.ema_flat.copy_(group.ema_flat.half().float())
                    group.finish()
                results = evaluate_group(group, group.configs[0].n_samples, training_time / len(configs_here),
                                         keep=0 if light else TRAJECTORY_POINTS)
                for r in results:
                    r["samples"] = stored_samples(r["samples"], light)  # scored as stored
                abar = float(group.schedule.alphas_cumprod[-1])
                futures = [(idx, executor.submit(score_runs, *args))
                           for idx, args in score_tasks(group.configs, results, abar, workers)]
                pending.append((group, results, futures))
                timings["evaluation"] += clock() - t0
            for group, results, futures in pending:
                t0 = clock()
                scores = {}
                for idx, future in futures:
                    scores.update(zip(idx, future.result()))
                timings["scoring"] += clock() - t0
                t0 = clock()
                saves = [savers.submit(_save, store, group, i, c, r, scores[i], light, half,
                                       {**made, "stack": len(configs_here)})
                         for i, (c, r) in enumerate(zip(group.configs, results))]
                for c, save in zip(group.configs, saves):
                    run = save.result()
                    timings["saving"] += clock() - t0
                    yield "done", c, run
                    t0 = clock()


def _save(store, group, i: int, c: TrainConfig, r: dict, scores: dict, light: bool, half: bool, made: dict):
    """Store run i of a group (in a thread: compressing its files releases the GIL)."""
    from .record import record

    weights = {"online": group.models[i].state_dict(), "ema": group.emas[i].state_dict()}
    rec = record(c, training_time=r["training_time"], eval_loss=r["eval_loss"], eval_loss_by_t=r["eval_loss_by_t"],
                 inference_time=r["inference_time"], scores=scores, samples=r["samples"], alpha=r["alpha"],
                 losses=r["losses"], trajectory=r["trajectory"], weights=weights, made=made, light=light)
    return store.save(c, rec.weights, rec.metrics, rec.arrays, half=half, made=rec.made)


def _train_progress(configs, device):
    from .events import relay

    return (yield from relay(train_stack(configs, device), lambda e: ("step", e[0], e[1])))
