"""The DDPM noise schedule, forward noising and reverse step (Ho et al. 2020, "DDPM").

Computed in float64 and kept as float32 buffers, so `.to(device)` moves them with the model.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class NoiseSchedule(nn.Module):
    def __init__(self, timesteps: int = 100, beta_start: float = 1e-4, beta_end: float = 0.02,
                 schedule: str = "linear"):
        super().__init__()
        if schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        elif schedule == "quadratic":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
        else:
            raise ValueError(f"unknown beta schedule {schedule!r}; choose one of: linear, quadratic")
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
        self.timesteps = timesteps

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. eq. 4)."""
        return self.sqrt_abar[t, None] * x0 + self.sqrt_one_minus_abar[t, None] * eps  # (B, 2)

    def predict_x0(self, xt: torch.Tensor, eps_hat: torch.Tensor, t) -> torch.Tensor:
        """x0_hat = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps_hat (eq. 4 inverted; no clipping)."""
        return self._at(self.sqrt_recip_abar, t) * xt - self._at(self.sqrt_recip_abar_m1, t) * eps_hat

    def posterior_mean(self, x0_hat: torch.Tensor, xt: torch.Tensor, t) -> torch.Tensor:
        """mu_tilde(x_t, x_0) of Ho et al. eq. 7."""
        return self._at(self.coef_x0, t) * x0_hat + self._at(self.coef_xt, t) * xt

    def step(self, eps_hat: torch.Tensor, t: int, xt: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """One reverse step x_t -> x_{t-1} (Ho et al. Algorithm 2, sigma_t^2 = beta_tilde_t)."""
        mean = self.posterior_mean(self.predict_x0(xt, eps_hat, t), xt, t)
        if t == 0 or noise is None:
            return mean
        return mean + self.variance[t].sqrt() * noise

    def vlb_kl(self, x0: torch.Tensor, xt: torch.Tensor, eps_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits per dimension (Ho et al. eq. 5).

        Both are Gaussians with the same fixed variance beta_tilde_t, so the KL is
        |mu_q - mu_p|^2 / (2 var). At t = 0 the bound has a decoder likelihood, not a KL, which
        the paper does not define for continuous 2D data: those samples contribute 0.
        """
        mu_q = self.posterior_mean(x0, xt, t)
        mu_p = self.posterior_mean(self.predict_x0(xt, eps_hat, t), xt, t)
        kl = (mu_q - mu_p).pow(2).mean(1) / (2 * self.variance[t]) / math.log(2)  # (B,)
        return torch.where(t > 0, kl, torch.zeros_like(kl))

    @staticmethod
    def _at(table: torch.Tensor, t):
        """table[t] shaped to broadcast over (B, 2), for a batch of t or one int."""
        return table[t] if isinstance(t, int) else table[t, None]
