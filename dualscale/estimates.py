"""How long runs will take: estimates from the stored runs most like the planned ones, phase by phase.

A run's time is its training plus its evaluation phases (events.PHASES). Each phase is estimated
from its own past cost, scaled by its own size: training by steps, the eval loss by the points,
sampling and the oracle start by samples x timesteps, the metrics by points + samples. Past costs
come from the runs most like the planned one (`most_like`): the same variant and settings on this
machine, else the same variant and settings anywhere (shipped runs included), else the same
variant at other sizes, scaled. Runs record their phases' seconds (`made["phases"]`) since
2026-12-04; for older runs the phases are derived from what they measured (FALLBACK). Medians,
so a few runs made under load do not move an estimate much. The basis is said in a few words.
"""
from __future__ import annotations

import math
import statistics

from .config import TrainConfig, settings_tag
from .events import PHASES

# Each phase's size, from a config: a phase's seconds scale with it.
SIZE = {"eval loss": lambda c: c.n_points, "sampling": lambda c: c.n_samples * c.timesteps,
        "oracle sampling": lambda c: c.n_samples * c.timesteps, "metrics": lambda c: c.n_points + c.n_samples,
        "saving": lambda c: 1}
STARTUP_S = 4.0  # a worker's interpreter and torch import, before its first event (measured 3-5 s here)


def _fallback(run) -> dict[str, float]:
    """Phase seconds of a run that did not record them, from what it measured: sampling is its
    inference time; the oracle start samples as many points through as many steps; the eval loss is
    a forward pass over the points (about a third of a training step per batch); the metrics and
    saving a few seconds at the reference's sizes."""
    c, m = run.config, run.metrics
    per_step = m["training_time"] / max(1, c.steps)
    return {"eval loss": per_step / 3 * math.ceil(c.n_points / c.batch_size), "sampling": m["inference_time"],
            "oracle sampling": m["inference_time"], "metrics": 3.0 * (c.n_points + c.n_samples) / 110_000,
            "saving": 0.5}


def phases_of(run) -> dict[str, float]:
    """A stored run's training and phase seconds (recorded, else derived)."""
    recorded = run.made.get("phases") if isinstance(run.made, dict) else None
    out = {**_fallback(run), **(recorded if isinstance(recorded, dict) else {})}
    return {"training": float(run.metrics["training_time"]), **{k: float(out[k]) for k in PHASES}}


def most_like(runs, config: TrainConfig) -> tuple[list, str]:
    """The stored runs to time `config` by, and what they are in a few words."""
    from .system import machine

    here = machine().get("cpu")
    same = [r for r in runs if r.config.variant == config.variant and settings_tag(r.config) == settings_tag(config)]
    local = [r for r in same if r.made.get("machine", {}).get("cpu") == here and not r.shipped]
    if local:
        return local, f"{len(local)} {config.variant} run(s) like it on this machine"
    if same:
        cpus = sorted({str(r.made.get("machine", {}).get("cpu") or "an unrecorded machine") for r in same})
        return same, f"{len(same)} stored {config.variant} run(s) like it (made on {', '.join(cpus[:2])})"
    other = [r for r in runs if r.config.variant == config.variant]
    if other:
        return other, f"{len(other)} {config.variant} run(s) of other sizes, scaled"
    return [], "no stored run to time it by"


def phase_seconds(runs, config: TrainConfig) -> tuple[dict[str, float], str] | None:
    """{"training": s, <phase>: s, ...} for a run of `config` (medians over `most_like`, each scaled
    to config's size), and the basis; None without a run to time it by."""
    like, basis = most_like(runs, config)
    if not like:
        return None
    out = {"training": statistics.median(phases_of(r)["training"] * config.steps / max(1, r.config.steps)
                                         for r in like)}
    for name in PHASES:
        out[name] = statistics.median(phases_of(r)[name] * SIZE[name](config) / max(1, SIZE[name](r.config))
                                      for r in like)
    return out, basis


def estimate_seconds(runs, configs, workers: int) -> tuple[float, str]:
    """Wall seconds `configs` take `workers` at a time, worker start-up included, and the basis."""
    parts = [phase_seconds(runs, c) for c in configs]
    known = [p for p in parts if p is not None]
    if not known:
        return math.nan, "no stored run to time them by"
    each = [sum(p[0].values()) + STARTUP_S for p in known]
    total = sum(each) * len(configs) / len(known)
    bases = list(dict.fromkeys(p[1] for p in known))
    return total / max(1, min(workers, len(configs))), "; ".join(bases[:3])


def remaining(expected: dict[str, float], step: int, total: int, rate: float | None, phase_index: int,
              in_phase_s: float) -> float | None:
    """Seconds still to go for a run in progress: the training left at its current speed (or as
    expected before it has one), then each evaluation phase at its expected cost; the current
    phase counts its expected cost less the time already in it, never less than a tenth of it (a
    phase running long is still running)."""
    if phase_index == 0:  # training (or starting)
        left = (total - step) / rate if rate and total else expected["training"] * (1 - step / total if total else 1)
        return left + sum(expected[p] for p in PHASES)
    current = PHASES[phase_index - 1]
    rest = sum(expected[p] for p in PHASES[phase_index:])
    return max(expected[current] - in_phase_s, 0.1 * expected[current]) + rest
