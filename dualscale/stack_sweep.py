"""A stacked sweep: configs trained in stacks by the engine (train.py: one loop per stack, each
group's runs in the same kernels), evaluated group by group (evaluate.py), scored on every CPU
core while the next group evaluates, and stored. Each run's draws come from its own generator, in
the order it would draw them alone.
"""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

from .config import TrainConfig
from .events import done_event, drain, relay
from .evaluate import TRAJECTORY_POINTS, evaluate
from .train import stack_key, train


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
    return [(idx[j:j + chunk], (ds, n, abar, [(results[i].samples, results[i].oracle) for i in idx[j:j + chunk]]))
            for (ds, n), idx in by_dataset.items() for j in range(0, len(idx), chunk)]


def run_stacks(configs: list[TrainConfig], store, device, half: bool = False, light: bool = False,
               command: str = "", jobs: int | None = None, timings: dict | None = None):
    """Train, evaluate and store configs in stacks. Yields events (events.py): PROGRESS while a stack
    trains (its steps, not the sweep's) and DONE as each run is stored. light: store no weights and no trajectory, and
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
            groups = yield from relay(train(configs_here, device), lambda p: p.to_event())
            timings["training"] += clock() - t0
            pending = []
            for group in groups:
                t0 = clock()
                if half:
                    group.round_to_half()
                results = drain(evaluate(group, light, keep=0 if light else TRAJECTORY_POINTS, score=False))
                for r in results:
                    r.samples = stored_samples(r.samples, light)  # scored as stored
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
                saves = [savers.submit(_save, store, group, i, r, scores[i], light, half,
                                       {**made, "stack": len(configs_here)}, len(configs_here))
                         for i, (c, r) in enumerate(zip(group.configs, results))]
                for c, save in zip(group.configs, saves):
                    run = save.result()
                    timings["saving"] += clock() - t0
                    yield done_event(run, cached=False)
                    t0 = clock()


def _save(store, group, i: int, ev, scores: dict, light: bool, half: bool, made: dict, stacked: int):
    """Store run i of a group (in a thread: compressing its files releases the GIL). Its training time
    is its share of the stack's wall time."""
    from .record import record

    c = group.configs[i]
    rec = record(c, training_time=group.training_time / stacked, eval_loss=ev.eval_loss,
                 eval_loss_by_t=ev.eval_loss_by_t, inference_time=ev.inference_time, scores=scores,
                 samples=ev.samples, alpha=ev.alpha, losses=group.losses[i].cpu().numpy(), trajectory=ev.trajectory,
                 weights=group.weights(i), made=made, light=light)
    return store.save(c, rec, half=half)
