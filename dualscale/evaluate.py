"""The paper's evaluation of a trained run: eval loss, sampling, inference time and the sample
metrics of the registry (metrics.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .diffusion import NoiseSchedule, sample
from .metrics import run_scores
from .models import Denoiser
from .system import precision, synchronize
from .train import Trained

EVAL_BATCH = 256     # the reference's batches: the loss is the mean of per-batch means
EVAL_CHUNK = 4       # batches evaluated per forward pass (same math; 1,024 points stay in cache)
TRAJECTORY_POINTS = 1_000


@dataclass
class Evaluation:
    metrics: dict            # every registry metric: training_time, eval_loss, inference_time, kl_divergence, ...
    samples: np.ndarray      # (n_samples, 2) float32
    alpha: np.ndarray | None  # (T,) mean alpha over the batch at each t; None for the baseline
    traj_t: np.ndarray       # (T + 1,) frame labels: T = the starting noise, t = after step t
    trajectory: np.ndarray   # (T + 1, P, 2) float16, the first P points through the reverse process


@torch.inference_mode()
def eval_loss(model: Denoiser, schedule: NoiseSchedule, data: torch.Tensor, g: torch.Generator) -> float:
    """One pass over all points with fresh t and eps, mean of the per-batch (256) MSEs of the
    network's target (eps, or v under v-prediction: then not comparable with eps runs)."""
    model.eval()
    tables = model.tables()  # what depends on t alone, once for the whole pass
    per_sample = []
    for x0 in data.split(EVAL_BATCH * EVAL_CHUNK):
        t = torch.randint(0, schedule.timesteps, (len(x0),), generator=g, device=data.device)
        eps = torch.randn(len(x0), 2, generator=g, device=data.device)
        out = model(schedule.add_noise(x0, eps, t), t, tables).float()
        per_sample.append((out - schedule.target(x0, eps, t)).pow(2).mean(1))  # (chunk,)
    se = torch.cat(per_sample).double().cpu().numpy()
    starts = np.arange(0, len(se), EVAL_BATCH)
    batch_means = np.add.reduceat(se, starts) / np.diff(np.append(starts, len(se)))
    model.train()
    return float(batch_means.mean())


def oracle_start(schedule: NoiseSchedule, data: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n draws of q(x_T): data points (drawn with replacement) noised to the last step, (n, 2)."""
    idx = torch.randint(0, len(data), (n,), generator=g, device=data.device)
    eps = torch.randn(n, 2, generator=g, device=data.device)
    return schedule.start(data[idx], eps)


def oracle_samples(model: Denoiser, schedule: NoiseSchedule, data: torch.Tensor, n: int, g: torch.Generator):
    """The model's samples when the reverse process starts from q(x_T) instead of N(0, I), (n, 2)."""
    return sample(model, schedule, n, g, start=oracle_start(schedule, data, n, g))[0]


def evaluate(trained: Trained, n_samples: int = 10_000, data_np: np.ndarray | None = None):
    """Every metric of the registry for one trained run, plus what the dashboard draws.

    A generator like train(): yields the name of each phase (events.PHASES) as it begins and
    returns the Evaluation: `ev = yield from evaluate(...)`.
    """
    device = trained.data.device
    yield "eval loss"
    with precision(trained.precision, device):
        loss = eval_loss(trained.model, trained.schedule, trained.data, trained.generator)
    yield "sampling"
    synchronize(device)
    start = time.perf_counter()
    with precision(trained.precision, device):
        samples, alpha, traj = sample(trained.ema, trained.schedule, n_samples, trained.generator,
                                      keep=min(TRAJECTORY_POINTS, n_samples))
    synchronize(device)
    inference_time = time.perf_counter() - start
    yield "oracle sampling"
    with precision(trained.precision, device):
        oracle = oracle_samples(trained.ema, trained.schedule, trained.data, n_samples, trained.generator)
    real = trained.data.cpu().numpy() if data_np is None else data_np
    yield "metrics"
    metrics = {"training_time": trained.training_time, "eval_loss": loss, "inference_time": inference_time,
               **run_scores(real, samples, oracle, float(trained.schedule.alphas_cumprod[-1]))}
    steps = np.arange(trained.schedule.timesteps, -1, -1)
    return Evaluation(metrics, samples.astype(np.float32), alpha, steps, traj.astype(np.float16))
