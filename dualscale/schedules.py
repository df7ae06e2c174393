"""Beta schedules: name -> betas for T steps, float64 numpy arrays (no torch: the Schedules page
draws them without loading it).

NoiseSchedule (diffusion.py) builds every table from these betas; TrainConfig offers their names.
Adding a schedule = one function here + one entry in BETA_SCHEDULES (+ ZERO_TERMINAL_SNR if its
last step reaches pure noise, where only v-prediction is defined).

Why more than the reference's linear betas: at T = 100 they leave abar_T = 0.364, so x_T still
carries sqrt(abar_T) = 0.60 of the data while sampling starts from N(0, I) (Lin et al. 2024,
"Common Diffusion Noise Schedules and Sample Steps Are Flawed", section 3.1).
"""
from __future__ import annotations

import math

import numpy as np

BETA_START, BETA_END = 1e-4, 0.02  # Ho et al. 2020, section 4 (T = 1000 there; the reference keeps them at T = 100)
COSINE_OFFSET = 0.008  # s of Nichol & Dhariwal 2021, eq. 17
COSINE_MAX_BETA = 0.999  # ibid.: betas clipped to <= 0.999 "to prevent singularities near t = T"


def linear(timesteps: int, beta_start: float = BETA_START, beta_end: float = BETA_END):
    """beta_t evenly spaced from beta_start to beta_end (Ho et al. 2020, section 4)."""
    return np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)


def quadratic(timesteps: int, beta_start: float = BETA_START, beta_end: float = BETA_END):
    """sqrt(beta_t) evenly spaced, squared: the reference code's "quadratic" option."""
    return np.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=np.float64) ** 2


def cosine(timesteps: int, beta_start: float = BETA_START, beta_end: float = BETA_END):
    """Nichol & Dhariwal 2021 ("Improved DDPM"), eq. 17: abar(t) = f(t) / f(0),
    f(t) = cos(((t / T + s) / (1 + s)) pi / 2)^2, beta_t = 1 - abar(t) / abar(t - 1) clipped to 0.999.
    beta_start and beta_end play no part."""
    t = np.arange(timesteps + 1, dtype=np.float64)
    f = np.cos((t / timesteps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    abar = f / f[0]
    return np.minimum(1 - abar[1:] / abar[:-1], COSINE_MAX_BETA)


def rescale_zero_terminal_snr(betas):
    """Lin et al. 2024, Algorithm 1: shift and scale sqrt(abar_t) so that sqrt(abar_T) = 0 (SNR_T = 0)
    while sqrt(abar_1) keeps its value; the betas follow from the new abar (beta_T = 1)."""
    abar_sqrt = np.sqrt(np.cumprod(1 - betas))
    first, last = abar_sqrt[0], abar_sqrt[-1]
    abar_sqrt = (abar_sqrt - last) * first / (first - last)
    abar = abar_sqrt**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def zero_snr(timesteps: int, beta_start: float = BETA_START, beta_end: float = BETA_END):
    """The linear schedule rescaled to zero terminal SNR (Lin et al. 2024, Algorithm 1): x_T is pure
    noise, so sampling from N(0, I) starts where training ended. Needs v-prediction (eps is undefined at SNR 0)."""
    return rescale_zero_terminal_snr(linear(timesteps, beta_start, beta_end))


BETA_SCHEDULES = {"linear": linear, "quadratic": quadratic, "cosine": cosine, "zero_snr": zero_snr}
ZERO_TERMINAL_SNR = ("zero_snr",)   # schedules whose abar_T is exactly 0: v-prediction only
USES_BETA_END = ("linear", "quadratic", "zero_snr")
PREDICTIONS = ("eps", "v")          # what the network predicts: the noise (Ho et al.) or v (Salimans & Ho 2022)
