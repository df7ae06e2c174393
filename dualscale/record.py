"""What a finished run contains, whichever engine made it: ONE function, `record()`.

A single run (runs.py, and the sweeps' workers through it) and a stacked sweep (stack_sweep.py)
measure the same things with the one engine (train.py, evaluate.py); both hand them to `record()`, which
decides the stored metrics, arrays, weights and the record of how the run was made. A light
run (`light=True`: how evidence and studies ship) keeps no weights and no trajectory, its
samples as float16 (the metrics are computed from exactly those: `stored_samples`) and its loss
history as means of LOSS_BLOCK steps; `lighten()` makes the same from a full run's arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOSS_BLOCK = 100  # a light run's loss history: means of this many steps


@dataclass
class Record:
    metrics: dict              # every registry metric the engine measured, + device, threads, torch
    arrays: dict               # arrays.npz: samples, alpha, losses, eval_loss_by_t (+ traj_t, trajectory)
    weights: dict | None       # {"online": state_dict, "ema": state_dict}; None for a light run
    made: dict                 # how it was made (runs.made_record + the engine's own keys)


def stored_samples(samples: np.ndarray, light: bool) -> np.ndarray:
    """The samples as the store keeps them: float16 in a light run. Score these, not the originals,
    so every stored metric can be recomputed from what is stored."""
    return samples.astype(np.float16) if light else samples.astype(np.float32)


def block_means(losses: np.ndarray, block: int = LOSS_BLOCK) -> np.ndarray:
    """Means of consecutive blocks of `block` steps (the last one may be shorter), float32."""
    starts = np.arange(0, len(losses), block)
    return (np.add.reduceat(losses.astype(np.float64), starts) / np.diff(np.append(starts, len(losses)))).astype(np.float32)


def lighten(arrays: dict) -> dict:
    """A light run's arrays from a full run's: no trajectory, the loss history as block means."""
    out = {k: v for k, v in arrays.items() if k not in ("traj_t", "trajectory") and v is not None}
    if "loss_block" not in out:
        out.update(losses=block_means(np.asarray(out["losses"]), LOSS_BLOCK), loss_block=np.array(LOSS_BLOCK))
    return out


def record(config, *, training_time: float, eval_loss: float, eval_loss_by_t: np.ndarray, inference_time: float,
           scores: dict, samples: np.ndarray, alpha: np.ndarray | None, losses: np.ndarray,
           trajectory: np.ndarray | None, weights: dict | None, made: dict, light: bool) -> Record:
    """The stored form of one finished run. `scores` must come from `stored_samples(samples, light)`."""
    metrics = {"training_time": float(training_time), "eval_loss": float(eval_loss),
               "inference_time": float(inference_time), **scores,
               **{k: made[k] for k in ("device", "threads", "torch")}}
    arrays = {"samples": stored_samples(samples, light), "alpha": alpha,
              "losses": np.asarray(losses, dtype=np.float32),
              "eval_loss_by_t": np.asarray(eval_loss_by_t, dtype=np.float32)}
    if alpha is None:
        del arrays["alpha"]
    if light:
        return Record(metrics, lighten(arrays), None, {**made, "light": True, "samples": "float16"})
    arrays.update(traj_t=np.arange(config.timesteps, -1, -1), trajectory=trajectory)
    return Record(metrics, arrays, weights, {**made, "light": False})
