"""The DDPM noise schedule, forward noising, the reverse step and the reverse process (Ho et al.
2020, "DDPM"), for a network that predicts the noise eps or v (Salimans & Ho 2022, "Progressive
Distillation", section 4: v = sqrt(abar) eps - sqrt(1 - abar) x0).

The schedule is computed in float64 and kept as float32 buffers, so `.to(device)` moves it with
the model. The betas come from schedules.py.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .schedules import BETA_END, BETA_SCHEDULES, BETA_START, PREDICTIONS, ZERO_TERMINAL_SNR

SAMPLE_CHUNK = 1024  # CPU sampling: points per chunk (benchmarked: 512-10,000 at 1 and 2 threads; docs/speed.md)


class NoiseSchedule(nn.Module):
    def __init__(self, timesteps: int = 100, beta_start: float = BETA_START, beta_end: float = BETA_END,
                 schedule: str = "linear", prediction: str = "eps"):
        super().__init__()
        if schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta schedule {schedule!r}; choose one of: {', '.join(BETA_SCHEDULES)}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of: {', '.join(PREDICTIONS)}")
        if schedule in ZERO_TERMINAL_SNR and prediction == "eps":
            raise ValueError(f"the {schedule} schedule reaches SNR 0, where eps-prediction is undefined; use prediction v")
        betas = torch.from_numpy(BETA_SCHEDULES[schedule](timesteps, beta_start, beta_end))
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        # Posterior q(x_{t-1} | x_t, x_0): Ho et al. eq. 6-7.
        var = betas * (1 - abar_prev) / (1 - abar)
        tables = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_abar": abar.sqrt(),
            "sqrt_one_minus_abar": (1 - abar).sqrt(),
            "sqrt_recip_abar": (1 / abar).sqrt(),
            "sqrt_recip_abar_m1": (1 / abar - 1).sqrt(),
            "coef_x0": betas * abar_prev.sqrt() / (1 - abar),
            "coef_xt": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
            "variance": var.clamp(min=1e-20),
        }
        for name, value in tables.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.timesteps, self.prediction = timesteps, prediction

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output: eps, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0
        (Salimans & Ho 2022, eq. 4 ff.)."""
        if self.prediction == "eps":
            return eps
        return self.sqrt_abar[t, None] * eps - self.sqrt_one_minus_abar[t, None] * x0  # (B, 2)

    def start(self, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A draw of q(x_T | x0), the true marginal where sampling starts (the oracle start; a
        diagnostic, not a sampler: it needs the data)."""
        return self.add_noise(x0, eps, torch.full((len(x0),), self.timesteps - 1, device=x0.device))

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. eq. 4)."""
        return self.sqrt_abar[t, None] * x0 + self.sqrt_one_minus_abar[t, None] * eps  # (B, 2)

    def predict_x0(self, xt: torch.Tensor, out: torch.Tensor, t) -> torch.Tensor:
        """x0_hat from the network's output (no clipping).

        eps: x0_hat = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps_hat (Ho et al. eq. 4 inverted);
        v: x0_hat = sqrt(abar_t) x_t - sqrt(1 - abar_t) v_hat (Salimans & Ho 2022, section 4), defined at abar_t = 0.
        """
        if self.prediction == "v":
            return self._at(self.sqrt_abar, t) * xt - self._at(self.sqrt_one_minus_abar, t) * out
        return self._at(self.sqrt_recip_abar, t) * xt - self._at(self.sqrt_recip_abar_m1, t) * out

    def posterior_mean(self, x0_hat: torch.Tensor, xt: torch.Tensor, t) -> torch.Tensor:
        """mu_tilde(x_t, x_0) of Ho et al. eq. 7."""
        return self._at(self.coef_x0, t) * x0_hat + self._at(self.coef_xt, t) * xt

    def step(self, out: torch.Tensor, t: int, xt: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """One reverse step x_t -> x_{t-1} from the network's output (eps_hat or v_hat): the
        posterior mean at x0_hat plus sigma_t noise (Ho et al. Algorithm 2, sigma_t^2 = beta_tilde_t;
        for eps this is the algorithm's own formula rewritten through x0_hat)."""
        mean = self.posterior_mean(self.predict_x0(xt, out, t), xt, t)
        if t == 0 or noise is None:
            return mean
        return mean + self.variance[t].sqrt() * noise

    def vlb_kl(self, x0: torch.Tensor, xt: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits per dimension (Ho et al. eq. 5).

        Both are Gaussians with the same fixed variance beta_tilde_t, so the KL is
        |mu_q - mu_p|^2 / (2 var). At t = 0 the bound has a decoder likelihood, not a KL, which
        the paper does not define for continuous 2D data: those samples contribute 0.
        """
        mu_q = self.posterior_mean(x0, xt, t)
        mu_p = self.posterior_mean(self.predict_x0(xt, out, t), xt, t)
        kl = (mu_q - mu_p).pow(2).mean(1) / (2 * self.variance[t]) / math.log(2)  # (B,)
        return torch.where(t > 0, kl, torch.zeros_like(kl))

    @staticmethod
    def _at(table: torch.Tensor, t):
        """table[t] shaped to broadcast over (B, 2), for a batch of t or one int."""
        return table[t] if isinstance(t, int) else table[t, None]


def rows_forward(models: list, tables: list | None = None):
    """f(x (R, N, 2), t (R, N) or one int) -> (R, N, 2): Denoiser i on row i, at fixed weights.
    tables: each model's tables() if at hand (what depends on t alone: once, not at every call)."""
    tables = [m.tables() for m in models] if tables is None else tables

    def f(x, t):
        outs = [m(x[i], t if isinstance(t, int) else t[i], tab) for i, (m, tab) in enumerate(zip(models, tables))]
        # each row laid out as the model's own output (a transposed view, models.Branches.output), so
        # that reductions over a row add in the order they would for the run alone
        return torch.stack([o.T for o in outs]).transpose(1, 2)
    return f


@torch.inference_mode()
def sample(model: nn.Module, schedule: NoiseSchedule, n: int, g: torch.Generator,
           keep: int = 0, chunk: int | None = None, start: torch.Tensor | None = None):
    """Reverse process of one Denoiser (eps_hat = model(x, t, tables)) from N(0, I), or from
    `start` (n, 2) (the oracle start q(x_T)): sample_rows with one row.
    Returns (points (n, 2) float32, alpha (T,) or None, trajectory (T+1, keep, 2) or None).
    """
    device = schedule.betas.device
    start = torch.randn(n, 2, generator=g, device=device) if start is None else start  # (n, 2)
    tables = model.tables()  # what depends on t alone: once, not at each of chunks x T forwards
    points, traj = sample_rows(rows_forward([model], [tables]), schedule, start[None], [g], keep, chunk)
    alpha = tables[1]  # depends on t alone: the batch mean at t is alpha(t) itself
    return points[0], None if alpha is None else alpha.float().cpu().numpy(), None if traj is None else traj[:, 0]


@torch.inference_mode()
def sample_rows(forward, schedule: NoiseSchedule, start: torch.Tensor, gens: list, keep: int = 0,
                chunk: int | None = None):
    """Reverse process (Ho et al. Algorithm 2) of R runs from start (R, n, 2) through t = T-1..0.

    forward(x (R, m, 2), t int) -> each run's eps_hat (or v_hat), (R, m, 2); gens: each run's
    generator, the noise of step t drawn from it. On a CPU the points go through in chunks of
    SAMPLE_CHUNK, each chunk all the way from noise to data, so a step's activations stay in
    cache; on a GPU as one batch. keep: how many of the first points the trajectory follows.
    Returns (points (R, n, 2) float32 numpy, trajectory (T+1, R, keep, 2) numpy or None).
    """
    device = start.device
    n = start.shape[1]
    chunk = chunk or (n if device.type == "cuda" else SAMPLE_CHUNK)
    keep = min(keep, n)
    out, frames = [], []  # frames: per chunk holding some of the first `keep` points, (T+1, R, m, 2)
    for i, x in enumerate(start.split(chunk, dim=1)):
        here = min(x.shape[1], keep - i * chunk)  # how many of this chunk's points the trajectory keeps
        fr = [x[:, :here].clone()] if here > 0 else None
        for t in range(schedule.timesteps - 1, -1, -1):
            eps_hat = forward(x, t).float()  # one t for the whole chunk; float: bf16 autocast stays inside the net
            noise = torch.stack([torch.randn(x.shape[1:], generator=g, device=device) for g in gens]) if t > 0 else None
            x = schedule.step(eps_hat, t, x, noise)
            if fr is not None:
                fr.append(x[:, :here].clone())
        out.append(x)
        if fr is not None:
            frames.append(torch.stack(fr))
    traj = torch.cat(frames, 2).cpu().numpy() if keep else None
    return torch.cat(out, 1).cpu().numpy(), traj
