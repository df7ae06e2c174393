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
from .system import arithmetic, synchronize
from .train import Trained

EVAL_BATCH = 256     # the reference's batches: the loss is the mean of per-batch means
EVAL_CHUNK = 4       # batches evaluated per forward pass (same math; 1,024 points stay in cache)
TRAJECTORY_POINTS = 1_000
BY_T_POINTS = 1_000  # eval_loss_by_t: points per timestep of the fixed evaluation set
BY_T_SEED = 1234     # ... drawn (points and noise) from this seed on the CPU: the same set for every run of a dataset


@dataclass
class Evaluation:
    eval_loss: float
    eval_loss_by_t: np.ndarray  # (T,) MSE per timestep on the fixed evaluation set
    inference_time: float
    scores: dict             # the sample metrics, kl_oracle_start and start_mismatch (metrics.run_scores)
    samples: np.ndarray      # (n_samples, 2) float32
    alpha: np.ndarray | None  # (T,) mean alpha over the batch at each t; None for the baseline
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


def fixed_eval_set(data: torch.Tensor, timesteps: int, n: int = BY_T_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation set of eval_loss_by_t: n training points and (T, n, 2) noise, drawn on the CPU
    from BY_T_SEED (so every run, variant and device of a dataset sees the same set; paired
    per-timestep differences then come from the models alone). -> (idx (n,), eps (T, n, 2))."""
    g = torch.Generator().manual_seed(BY_T_SEED)
    idx = torch.randint(0, data.shape[-2], (n,), generator=g)
    eps = torch.randn(timesteps, n, 2, generator=g)
    return idx.to(data.device), eps.to(data.device)


@torch.inference_mode()
def eval_loss_by_t(model: Denoiser, schedule: NoiseSchedule, data: torch.Tensor) -> np.ndarray:
    """The network's MSE at each timestep t = 0..T-1 on the fixed evaluation set, (T,) float64.
    Their mean estimates the eval loss (t uniform) on far fewer points; differences between runs
    show at which noise levels a variant wins."""
    model.eval()
    idx, eps = fixed_eval_set(data, schedule.timesteps)
    x0, tables, out = data[idx], model.tables(), []
    for t in range(schedule.timesteps):
        tt = torch.full((len(x0),), t, device=data.device)
        pred = model(schedule.add_noise(x0, eps[t], tt), t, tables).float()
        out.append((pred - schedule.target(x0, eps[t], tt)).pow(2).mean())
    model.train()
    return torch.stack(out).double().cpu().numpy()


def oracle_seed(seed: int) -> int:
    """The seed of a run's oracle-start stream: a function of the run's seed alone, so training,
    a stacked sweep and `rescore` draw the same oracle start whatever was drawn before it."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"oracle-start/{seed}".encode()).digest()[:8], "big") >> 1


def oracle_generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(oracle_seed(seed))


def oracle_start(schedule: NoiseSchedule, data: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n draws of q(x_T): data points (drawn with replacement) noised to the last step, (n, 2)."""
    idx = torch.randint(0, len(data), (n,), generator=g, device=data.device)
    eps = torch.randn(n, 2, generator=g, device=data.device)
    return schedule.start(data[idx], eps)


def oracle_samples(model: Denoiser, schedule: NoiseSchedule, data: torch.Tensor, n: int, g: torch.Generator):
    """The model's samples when the reverse process starts from q(x_T) instead of N(0, I), (n, 2)."""
    return sample(model, schedule, n, g, start=oracle_start(schedule, data, n, g))[0]


def evaluate(trained: Trained, config, light: bool = False):
    """Every metric of the registry for one trained run, plus what the dashboard draws.

    A generator like train(): yields the name of each phase (events.PHASES) as it begins and
    returns the Evaluation: `ev = yield from evaluate(...)`. light: the samples are scored as a
    light run stores them (float16).
    """
    from .record import stored_samples

    n_samples = config.n_samples
    device = trained.data.device
    yield "eval loss"
    with arithmetic(trained.precision, device):
        loss = eval_loss(trained.model, trained.schedule, trained.data, trained.generator)
        by_t = eval_loss_by_t(trained.model, trained.schedule, trained.data)
    yield "sampling"
    synchronize(device)
    start = time.perf_counter()
    with arithmetic(trained.precision, device):
        samples, alpha, traj = sample(trained.ema, trained.schedule, n_samples, trained.generator,
                                      keep=min(TRAJECTORY_POINTS, n_samples))
    synchronize(device)
    inference_time = time.perf_counter() - start
    yield "oracle sampling"
    with arithmetic(trained.precision, device):
        oracle = oracle_samples(trained.ema, trained.schedule, trained.data, n_samples,
                                oracle_generator(config.seed, device))
    yield "metrics"
    scores = run_scores(trained.data.cpu().numpy(), stored_samples(samples, light), oracle,
                        float(trained.schedule.alphas_cumprod[-1]))
    return Evaluation(loss, by_t, inference_time, scores, samples.astype(np.float32), alpha, traj.astype(np.float16))
