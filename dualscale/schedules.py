"""Beta schedules: name -> betas for T steps, computed in float64 (import-light: torch on first use).

NoiseSchedule (diffusion.py) builds every table from these betas; TrainConfig offers their names.
Adding a schedule = one function here + one entry in BETA_SCHEDULES.
"""
from __future__ import annotations

BETA_START, BETA_END = 1e-4, 0.02  # Ho et al. 2020, section 4 (T = 1000 there; the reference keeps them at T = 100)


def linear(timesteps: int, beta_start: float = BETA_START, beta_end: float = BETA_END):
    """beta_t evenly spaced from beta_start to beta_end (Ho et al. 2020, section 4)."""
    import torch

    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def quadratic(timesteps: int, beta_start: float = BETA_START, beta_end: float = BETA_END):
    """sqrt(beta_t) evenly spaced, squared: the reference code's "quadratic" option."""
    import torch

    return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2


BETA_SCHEDULES = {"linear": linear, "quadratic": quadratic}
