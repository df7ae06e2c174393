"""One run end to end: config -> train -> evaluate -> store, as a stream of event dicts.

Shared by the command line and every worker (sweeps and the dashboard's runs go through
`python -m dualscale train`), so all of them train, measure and store the same way. Events are
plain dicts named in events.py (JSON lines in the store's progress file):
  {"event": PROGRESS, "step", "total", "loss", "lr", "elapsed", ["alpha"], ["preview"]}
  {"event": EVALUATING}
  {"event": DONE, "run_id", "cached", "path", <metrics>}
  {"event": FAILED, "error"} / {"event": CANCELLED}
"""
from __future__ import annotations

import functools
import time

import numpy as np
import torch

from . import events
from .events import Cancelled, done_event  # noqa: F401  (Cancelled re-exported: run_config's callers catch it)
from .config import TrainConfig, changed_settings
from .evaluate import evaluate
from .store import Run, Store
from .system import resolve_device
from .train import train

def run_config(config: TrainConfig, store: Store, device: str = "auto", force: bool = False,
               previews: int = 0, half: bool = False, every: int | None = None, light: bool = False):
    """Train, evaluate and store `config`, yielding event dicts; a stored config is loaded instead."""
    config.validate().check_resources()
    dev = resolve_device(device)
    if not force:
        found = store.find(config)
        if found is not None:  # served as valid: every file it lists must still be what was written
            yield done_event(found.verify(), cached=True)
            return
    store.check_writable()
    with store.lock(config):
        store.start_progress(config.run_id)
        try:
            run = yield from _train_and_store(config, store, dev, previews, half, every, light)
        except BaseException as e:  # record why, then let the caller handle it
            cancelled = isinstance(e, (Cancelled, KeyboardInterrupt, GeneratorExit))
            store.append_progress(config.run_id, {"event": events.CANCELLED} if cancelled else
                                  {"event": events.FAILED, "error": str(e).splitlines()[0] if str(e) else repr(e)})
            raise
        event = done_event(run, cached=False)
        store.append_progress(config.run_id, event)
        yield event


def _train_and_store(config, store, dev, previews, half, every, light):
    def progress(p):  # the Progress objects become event dicts, kept in the store as they pass
        event = p.to_event()
        store.append_progress(config.run_id, event)
        return event

    runs = (yield from events.relay(train(config, dev, every=every, previews=previews), progress))[0]
    store.append_progress(config.run_id, {"event": events.EVALUATING, "time": time.time()})
    yield {"event": events.EVALUATING}
    starts: dict[str, float] = {}  # each phase's start: its seconds go into the run's record (estimates.py)

    def phase(name):
        starts[name] = time.perf_counter()
        return _phase(store, config, name)

    ev = yield from events.relay(evaluated(runs, half, light), phase)
    yield phase("saving")
    rec = single_record(runs, ev, dev, half, light)
    marks = [*starts.values()]
    rec.made["phases"] = {name: marks[i + 1] - t for i, (name, t) in enumerate(starts.items()) if i + 1 < len(marks)}
    return store.save(config, rec, half=half)


def evaluated(runs, half: bool, light: bool = False):
    """A one-run Runs' weights rounded through float16 if `half`, then evaluate(): yields the phase
    names, returns the run's Evaluation."""
    if half:
        runs.round_to_half()
    return (yield from evaluate(runs, light))[0]


def single_record(runs, ev, dev, half: bool, light: bool = False):
    """record.record() of a one-run Runs: what the store keeps of it."""
    from .record import record

    config = runs.configs[0]
    made = made_record(dev, half, remake_command(config, dev.type, half, light))
    return record(config, training_time=runs.training_time, eval_loss=ev.eval_loss, eval_loss_by_t=ev.eval_loss_by_t,
                  inference_time=ev.inference_time, scores=ev.scores, samples=ev.samples, alpha=ev.alpha,
                  losses=runs.losses[0].cpu().numpy(), trajectory=ev.trajectory, weights=runs.weights(0),
                  made=made, light=light)


def made_record(device, half: bool, command: str, engine: str = "single") -> dict:
    """How a run is made: device, torch threads and version, float16 weights, the command that remakes
    it, the machine (CPU model and the instruction sets kernels dispatch on; the GPU's name) and the
    engine ("single" or "stacked", and a digest of the code that computes its numbers)."""
    from .system import machine

    return {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__, "half": half,
            "command": command, "machine": machine(device), "engine": {"name": engine, "code": engine_code()}}


NUMERIC_CODE = ("config", "data", "diffusion", "schedules", "models", "train", "evaluate", "metrics")


@functools.cache
def engine_code() -> str:
    """A digest of the modules a run's numbers come from: two runs with the same digest were made by
    the same code (a changed digest in a running family says the engine changed under it). Taken
    once per process, when this module is imported, so it names the code that process runs."""
    import hashlib
    from pathlib import Path

    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in NUMERIC_CODE:
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()[:12]


def rescore(store: Store, metrics=None, runs=None):
    """Compute the registry metrics that stored runs lack and record them in run.json, and the eval
    loss per timestep for runs with weights that lack it (into arrays.npz). Yields (run, {name: value})
    (for eval_loss_by_t: its mean).

    From the stored samples and the seed-42 data: every sample metric. From the data and the
    schedule: start_mismatch. From the weights (runs that ship them): kl_oracle_start, sampled
    from q(x_T) with the run's own oracle stream (evaluate.oracle_generator)."""
    from .evaluate import oracle_generator, oracle_samples
    from .metrics import METRICS, data_cloud, kl_divergence, start_mismatch
    from .train import make_schedule

    from .evaluate import eval_loss_by_t

    wanted = list(metrics or METRICS)
    names = [m for m in wanted if METRICS[m].from_samples is not None]
    for run in (store.runs() if runs is None else runs):
        if not run.light and run.eval_loss_by_t() is None:  # from the online weights, on the fixed set
            data = torch.from_numpy(data_cloud(run.config.dataset, run.config.n_points).points).float()
            by_t = eval_loss_by_t(run.load_model("online"), make_schedule(run.config), data)
            run = store.update_arrays(run, {"eval_loss_by_t": by_t.astype(np.float32)})
            yield run, {"eval_loss_by_t": float(by_t.mean())}
        missing = [m for m in names if m not in run.metrics]
        start = [m for m in ("start_mismatch", "kl_oracle_start") if m in wanted and m not in run.metrics
                 and not (m == "kl_oracle_start" and run.light)]
        if not missing and not start:
            continue
        data = data_cloud(run.config.dataset, run.config.n_points)  # kept: the next run likely shares it
        values = {m: METRICS[m].from_samples(data, run.samples()) for m in missing}
        schedule = make_schedule(run.config)
        if "start_mismatch" in start:  # kept in the cloud per schedule: the same for every run of a dataset
            values["start_mismatch"] = start_mismatch(data, float(schedule.alphas_cumprod[-1]))
        if "kl_oracle_start" in start:
            oracle = oracle_samples(run.load_model("ema"), schedule, torch.from_numpy(data.points).float(),
                                    run.config.n_samples, oracle_generator(run.config.seed, "cpu"))
            values["kl_oracle_start"] = kl_divergence(data, oracle)
        yield store.update_metrics(run, values), values


def check(store: Store, runs=None):
    """Recompute every metric a stored run can be scored on again, and compare with what it records.
    Yields (run, {metric: (stored, recomputed)}) for each run, differences only (exact comparison:
    the same samples and data give the same numbers). Sample metrics and start_mismatch for every
    run; kl_oracle_start for runs with weights (its stream depends on the run alone)."""
    from .evaluate import oracle_generator, oracle_samples
    from .metrics import METRICS, data_cloud, kl_divergence, start_mismatch
    from .train import make_schedule

    for run in (store.runs() if runs is None else runs):
        data = data_cloud(run.config.dataset, run.config.n_points)
        samples = run.samples()
        fresh = {m: spec.from_samples(data, samples) for m, spec in METRICS.items()
                 if spec.from_samples is not None and m in run.metrics}
        schedule = make_schedule(run.config)
        if "start_mismatch" in run.metrics:
            fresh["start_mismatch"] = start_mismatch(data, float(schedule.alphas_cumprod[-1]))
        if "kl_oracle_start" in run.metrics and not run.light:
            oracle = oracle_samples(run.load_model("ema"), schedule, torch.from_numpy(data.points).float(),
                                    run.config.n_samples, oracle_generator(run.config.seed, "cpu"))
            fresh["kl_oracle_start"] = kl_divergence(data, oracle)
        yield run, {m: (run.metrics[m], v) for m, v in fresh.items() if v != run.metrics[m]}


KNOWN_DIFFERENCES = {  # metric: (since, why) - stored values that a recomputation cannot match, by design
    "kl_oracle_start": ("2026-11-28", "drawn before the oracle start got a random stream of the run's seed alone "
                        "(commit 68d0d26); runs recorded since then match"),
}


def known_difference(run: Run, metric: str) -> str | None:
    """Why a stored value differs from its recomputation, where that is known and dated: runs recorded
    before record.py (they have no machine in `made`) drew kl_oracle_start from an older stream."""
    if metric in KNOWN_DIFFERENCES and "machine" not in run.made:
        since, why = KNOWN_DIFFERENCES[metric]
        return f"known since {since}: {why}"
    return None


def _phase(store: Store, config: TrainConfig, name: str) -> dict:
    event = {"event": events.PHASE, "name": name, "index": events.PHASES.index(name) + 1, "of": len(events.PHASES),
             "time": time.time()}
    store.append_progress(config.run_id, event)
    return event


def remake_command(config: TrainConfig, device: str, half: bool, light: bool = False) -> str:
    """The command that trains this config again, to the same numbers on the same kind of device."""
    reference = not changed_settings(config)
    if reference:
        head = (f"python -m dualscale reproduce --datasets {config.dataset} --variants {config.variant} "
                f"--seeds {config.seed} --device {device} --jobs 1")
    else:
        head = f"python -m dualscale train --config '{config.to_json()}' --device {device}"
    return head + (" --half" if half else "") + (" --light" if light else "") + " --store TMP"


def made_of(run: Run) -> dict:
    """How a run was made: its record, completed for runs stored before runs recorded all of it
    from what its metrics and weights show (device, threads, torch; float16 weights = --half)."""
    made = dict(run.made)
    if "half" not in made:  # read as the store reads every file: checked, never a FIFO
        weights = run._arrays("weights.npz")
        made["half"] = bool(next(iter(weights.values())).dtype == np.float16)
    for key in ("device", "threads", "torch"):
        made.setdefault(key, run.metrics.get(key))
    made.setdefault("command", remake_command(run.config, str(made["device"] or "cpu").split(":")[0], made["half"]))
    return made


engine_code()  # now, beside the imports it describes (an edit on disk later does not change this process)
