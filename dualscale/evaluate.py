"""The engine's evaluation half: the paper's evaluation of trained runs, every run of a group in
the same kernels (a single run is one row): eval loss, eval loss per timestep, sampling, inference
time, sampling from the oracle start, and the sample metrics of the registry (metrics.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .diffusion import NoiseSchedule, rows_forward, sample_rows
from .metrics import run_scores
from .system import arithmetic, synchronize
from .train import Runs

EVAL_BATCH = 256     # the reference's batches: the loss is the mean of per-batch means
EVAL_CHUNK = 4       # batches evaluated per forward pass (same math; 1,024 points stay in cache)
TRAJECTORY_POINTS = 1_000
BY_T_POINTS = 1_000  # eval_loss_by_t: points per timestep of the fixed evaluation set
BY_T_SEED = 1234     # ... drawn (points and noise) from this seed on the CPU: the same set for every run of a dataset


@dataclass
class Evaluation:
    """One run's evaluation."""
    eval_loss: float
    eval_loss_by_t: np.ndarray  # (T,) MSE per timestep on the fixed evaluation set
    inference_time: float
    scores: dict             # the sample metrics, kl_oracle_start and start_mismatch (metrics.run_scores); {} unscored
    samples: np.ndarray      # (n_samples, 2) float32
    oracle: np.ndarray       # (n_samples, 2) float32: the samples from the oracle start q(x_T)
    alpha: np.ndarray | None  # (T,) alpha(t) of the EMA model; None for the baseline
    trajectory: np.ndarray | None  # (T + 1, P, 2) float16, the first P points through the reverse process


@torch.inference_mode()
def eval_losses(forward, schedule: NoiseSchedule, data: torch.Tensor, gens: list) -> np.ndarray:
    """Each run's eval loss, (R,): one pass over its points (data (R, n, 2)) with fresh t and eps from
    its generator, the mean of the per-batch (256) MSEs of the network's target (eps, or v under
    v-prediction: then not comparable with eps runs). forward: as Runs.forward."""
    per_sample = []
    for x0 in data.split(EVAL_BATCH * EVAL_CHUNK, dim=1):  # (R, chunk, 2)
        n = x0.shape[1]
        t = torch.stack([torch.randint(0, schedule.timesteps, (n,), generator=g, device=data.device) for g in gens])
        eps = torch.stack([torch.randn(n, 2, generator=g, device=data.device) for g in gens])
        out = forward(schedule.add_noise(x0, eps, t), t).float()
        per_sample.append((out - schedule.target(x0, eps, t)).pow(2).mean(2))  # (R, chunk)
    se = torch.cat(per_sample, 1).double().cpu().numpy()  # (R, n)
    starts = np.arange(0, se.shape[1], EVAL_BATCH)
    means = np.add.reduceat(se, starts, axis=1) / np.diff(np.append(starts, se.shape[1]))
    return means.mean(1)


def fixed_eval_set(data: torch.Tensor, timesteps: int, n: int = BY_T_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation set of eval_loss_by_t: n training points and (T, n, 2) noise, drawn on the CPU
    from BY_T_SEED (so every run, variant and device of a dataset sees the same set; paired
    per-timestep differences then come from the models alone). -> (idx (n,), eps (T, n, 2))."""
    g = torch.Generator().manual_seed(BY_T_SEED)
    idx = torch.randint(0, data.shape[-2], (n,), generator=g)
    eps = torch.randn(timesteps, n, 2, generator=g)
    return idx.to(data.device), eps.to(data.device)


@torch.inference_mode()
def eval_losses_by_t(forward, schedule: NoiseSchedule, data: torch.Tensor) -> np.ndarray:
    """Each run's MSE at each timestep t = 0..T-1 on the fixed evaluation set, (R, T) float64.
    Their mean estimates the eval loss (t uniform) on far fewer points; differences between runs
    show at which noise levels a variant wins."""
    idx, eps = fixed_eval_set(data, schedule.timesteps)
    x0, out = data[:, idx], []  # (R, n, 2)
    for t in range(schedule.timesteps):
        tt = torch.full(x0.shape[:2], t, device=x0.device)
        pred = forward(schedule.add_noise(x0, eps[t].expand_as(x0), tt), t).float()
        out.append((pred - schedule.target(x0, eps[t].expand_as(x0), tt)).pow(2).mean((1, 2)))  # (R,)
    return torch.stack(out, 1).double().cpu().numpy()


def eval_loss_by_t(model, schedule: NoiseSchedule, data: torch.Tensor) -> np.ndarray:
    """eval_losses_by_t of one model (a stored run's), data (n, 2): (T,)."""
    return eval_losses_by_t(rows_forward([model]), schedule, data[None])[0]


def oracle_seed(seed: int) -> int:
    """The seed of a run's oracle-start stream: a function of the run's seed alone, so training,
    a stacked sweep and `rescore` draw the same oracle start whatever was drawn before it."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"oracle-start/{seed}".encode()).digest()[:8], "big") >> 1


def oracle_generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(oracle_seed(seed))


def oracle_starts(schedule: NoiseSchedule, data: torch.Tensor, n: int, gens: list) -> torch.Tensor:
    """n draws of q(x_T) per run, from its oracle generator: its data points (data (R, m, 2), drawn
    with replacement) noised to the last step, (R, n, 2)."""
    starts = []
    for points, g in zip(data, gens):
        idx = torch.randint(0, len(points), (n,), generator=g, device=data.device)
        eps = torch.randn(n, 2, generator=g, device=data.device)
        starts.append(schedule.start(points[idx], eps))
    return torch.stack(starts)


def oracle_samples(model, schedule: NoiseSchedule, data: torch.Tensor, n: int, g: torch.Generator) -> np.ndarray:
    """One model's samples when the reverse process starts from q(x_T) instead of N(0, I), (n, 2)."""
    start = oracle_starts(schedule, data[None], n, [g])
    return sample_rows(rows_forward([model]), schedule, start, [g])[0][0]


def evaluate(runs: Runs, light: bool = False, keep: int = TRAJECTORY_POINTS, score: bool = True):
    """Every metric of the registry for each run of a group, plus what the dashboard draws.

    A generator: yields the name of each phase (events.PHASES) as it begins and returns one
    Evaluation per run: `evs = yield from evaluate(...)`. The eval losses come from the online
    weights, the samples from the EMA weights; each run's draws go on from its generator. The
    inference time is the group's sampling wall time divided by its runs. light: the samples are
    scored as a light run stores them (float16). score=False leaves the scores to the caller
    (a stacked sweep scores on every CPU core while the GPU evaluates the next group).
    """
    from .record import stored_samples

    c, s, dev, r = runs.configs[0], runs.schedule, runs.device, len(runs.configs)
    n = c.n_samples
    yield "eval loss"
    with arithmetic(c.compute_precision, dev):
        online = runs.forward("online")
        losses = eval_losses(online, s, runs.data, runs.gens)
        by_t = eval_losses_by_t(online, s, runs.data)
    yield "sampling"
    synchronize(dev)
    start = time.perf_counter()
    with arithmetic(c.compute_precision, dev):
        ema = runs.forward("ema")
        noise = torch.stack([torch.randn(n, 2, generator=g, device=dev) for g in runs.gens])  # (R, n, 2)
        samples, traj = sample_rows(ema, s, noise, runs.gens, keep=min(keep, n))
    synchronize(dev)
    inference_time = (time.perf_counter() - start) / r
    yield "oracle sampling"
    with arithmetic(c.compute_precision, dev):
        gens = [oracle_generator(cfg.seed, dev) for cfg in runs.configs]
        oracle, _ = sample_rows(ema, s, oracle_starts(s, runs.data, n, gens), gens)
    yield "metrics"
    out = []
    for i, cfg in enumerate(runs.configs):
        alpha = runs.emas[i].alpha_table()
        scores = run_scores(runs.data[i].cpu().numpy(), stored_samples(samples[i], light), oracle[i],
                            float(s.alphas_cumprod[-1])) if score else {}
        out.append(Evaluation(float(losses[i]), by_t[i], inference_time, scores, samples[i].astype(np.float32),
                              oracle[i].astype(np.float32), None if alpha is None else alpha.detach().float().cpu().numpy(),
                              None if traj is None else traj[:, i].astype(np.float16)))
    return out
