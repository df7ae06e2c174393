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
        betas = BETA_SCHEDULES[schedule](timesteps, beta_start, beta_end)
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


@torch.inference_mode()
def sample(model: nn.Module, schedule: NoiseSchedule, n: int, g: torch.Generator,
           keep: int = 0, chunk: int | None = None, start: torch.Tensor | None = None):
    """Reverse process from N(0, I) through t = T-1..0 (Ho et al. Algorithm 2).

    start: (n, 2) points to start from instead of N(0, I) draws (the oracle start q(x_T)).

    `model` is a Denoiser (eps_hat = model(x, t, tables)). On a CPU the points go through in
    chunks of SAMPLE_CHUNK, each chunk all the way from noise to data, so a step's activations
    stay in cache; on a GPU as one batch.
    Returns (points (n, 2) float32, alpha (T,) or None, trajectory (T+1, keep, 2) or None).
    """
    model.eval()
    device = schedule.betas.device
    chunk = chunk or (n if device.type == "cuda" else SAMPLE_CHUNK)
    keep = min(keep, n)
    start = torch.randn(n, 2, generator=g, device=device) if start is None else start  # (n, 2)
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
    return torch.cat(out).cpu().numpy(), None if alpha is None else alpha.float().cpu().numpy(), traj


def _reverse(model, schedule, tables, x, g, frames, keep):
    """Denoise one chunk from t = T-1 to 0, appending x[:keep] at each step to `frames`."""
    if frames is not None:
        frames.append(x[:keep].clone())
    for t in range(schedule.timesteps - 1, -1, -1):
        eps_hat = model(x, t, tables).float()  # one t for the whole chunk; float: bf16 autocast stays inside the net
        noise = torch.randn(x.shape, generator=g, device=x.device) if t > 0 else None
        x = schedule.step(eps_hat, t, x, noise)
        if frames is not None:
            frames.append(x[:keep].clone())
    return x
