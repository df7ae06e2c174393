"""The paper's evaluation of a trained run: eval loss, sampling, inference time, KL (reference.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .diffusion import NoiseSchedule
from .metrics import kl_divergence
from .models import Denoiser
from .train import Trained

EVAL_BATCH = 256     # the reference's batches: the loss is the mean of per-batch means
EVAL_CHUNK = 4       # batches evaluated per forward pass (same math; 1,024 points stay in cache)
TRAJECTORY_POINTS = 1_000
SAMPLE_CHUNK = 512   # CPU sampling: points per chunk (a layer's activations fit a core's L2 cache)


@dataclass
class Evaluation:
    metrics: dict            # training_time, eval_loss, inference_time, kl_divergence (+ device)
    samples: np.ndarray      # (n_samples, 2) float32
    alpha: np.ndarray | None  # (T,) mean alpha over the batch at each t; None for the baseline
    traj_t: np.ndarray       # (T + 1,) frame labels: T = the starting noise, t = after step t
    trajectory: np.ndarray   # (T + 1, P, 2) float16, the first P points through the reverse process


@torch.inference_mode()
def eval_loss(model: Denoiser, schedule: NoiseSchedule, data: torch.Tensor, g: torch.Generator) -> float:
    """One pass over all points with fresh t and eps, mean of the per-batch (256) MSEs."""
    model.eval()
    tables = model.tables()  # what depends on t alone, once for the whole pass
    per_sample = []
    for x0 in data.split(EVAL_BATCH * EVAL_CHUNK):
        t = torch.randint(0, schedule.timesteps, (len(x0),), generator=g, device=data.device)
        eps = torch.randn(len(x0), 2, generator=g, device=data.device)
        eps_hat = model(schedule.add_noise(x0, eps, t), t, tables)
        per_sample.append((eps_hat - eps).pow(2).mean(1))  # (chunk,)
    se = torch.cat(per_sample).double().cpu().numpy()
    starts = np.arange(0, len(se), EVAL_BATCH)
    batch_means = np.add.reduceat(se, starts) / np.diff(np.append(starts, len(se)))
    model.train()
    return float(batch_means.mean())


@torch.inference_mode()
def sample(model: Denoiser, schedule: NoiseSchedule, n: int, g: torch.Generator,
           keep: int = 0, chunk: int | None = None):
    """Reverse process from N(0, I) through t = T-1..0 (Ho et al. Algorithm 2).

    On a CPU the points go through in chunks of SAMPLE_CHUNK, each chunk all the way from noise
    to data, so a step's activations stay in cache; on a GPU as one batch.
    Returns (points (n, 2) float32, alpha (T,) or None, trajectory (T+1, keep, 2) or None).
    """
    model.eval()
    device = schedule.betas.device
    chunk = chunk or (n if device.type == "cuda" else SAMPLE_CHUNK)
    keep = min(keep, n)
    start = torch.randn(n, 2, generator=g, device=device)  # (n, 2)
    tables = model.tables()  # what depends on t alone: once, not at each of chunks x T forwards
    out, frames = [], []  # frames: per chunk holding some of the first `keep` points, (T+1, m, 2)
    for i, x in enumerate(start.split(chunk)):
        here = min(len(x), keep - i * chunk)  # how many of this chunk's points the trajectory keeps
        frames_here = [] if here > 0 else None
        out.append(_reverse(model, schedule, tables, x, g, frames_here, here))
        if here > 0:
            frames.append(torch.stack(frames_here))
    model.train()
    alpha = tables[1]  # depends on t alone: the batch mean at t is alpha(t) itself
    traj = torch.cat(frames, 1).cpu().numpy() if keep else None
    return torch.cat(out).cpu().numpy(), None if alpha is None else alpha.cpu().numpy(), traj


def _reverse(model, schedule, tables, x, g, frames, keep):
    """Denoise one chunk from t = T-1 to 0, appending x[:keep] at each step to `frames`."""
    if frames is not None:
        frames.append(x[:keep].clone())
    for t in range(schedule.timesteps - 1, -1, -1):
        eps_hat = model(x, t, tables)  # one t for the whole chunk: its table row is shared
        noise = torch.randn(x.shape, generator=g, device=x.device) if t > 0 else None
        x = schedule.step(eps_hat, t, x, noise)
        if frames is not None:
            frames.append(x[:keep].clone())
    return x


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(trained: Trained, n_samples: int = 10_000, data_np: np.ndarray | None = None) -> Evaluation:
    """All four of the paper's metrics for one trained run, plus what the dashboard draws."""
    device = trained.data.device
    loss = eval_loss(trained.model, trained.schedule, trained.data, trained.generator)
    synchronize(device)
    start = time.perf_counter()
    samples, alpha, traj = sample(trained.ema, trained.schedule, n_samples, trained.generator,
                                  keep=min(TRAJECTORY_POINTS, n_samples))
    synchronize(device)
    inference_time = time.perf_counter() - start
    real = trained.data.cpu().numpy() if data_np is None else data_np
    metrics = {
        "training_time": trained.training_time,
        "eval_loss": loss,
        "inference_time": inference_time,
        "kl_divergence": kl_divergence(real, samples),
    }
    steps = np.arange(trained.schedule.timesteps, -1, -1)
    return Evaluation(metrics, samples.astype(np.float32), alpha, steps, traj.astype(np.float16))
