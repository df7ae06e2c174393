"""TrainConfig: everything that decides a run's numbers, with the reference defaults.

Defaults are the experiment that produced the paper's tables (shared/reference.md), not the
paper's prose (which says lr 1e-4, batch 64): those values are reachable as options.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

VARIANTS = ("baseline", "fixed", "adaptive")
SCHEDULES = ("linear", "quadratic")
WEIGHT_NETS = ("sigmoid", "softmax")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "dino"          # a name from dualscale.DATASETS
    variant: str = "adaptive"      # baseline (one branch) | fixed (alpha = 0.5) | adaptive (alpha(t))
    seed: int = 0                  # seeds init, batches, t, noise and sampling
    steps: int = 10_000            # optimizer steps
    batch_size: int = 256          # points per step (shuffled passes over the data)
    lr: float = 3e-4               # AdamW peak lr, cosine-annealed to 0 over `steps`
    weight_decay: float = 0.01     # AdamW decoupled weight decay
    grad_clip: float = 0.5         # max global grad norm
    n_points: int = 100_000        # training points drawn from the dataset (seed 42, as the reference)
    timesteps: int = 100           # diffusion steps T
    beta_schedule: str = "linear"  # linear | quadratic, betas from 1e-4 to 0.02
    kl_weight: float = 0.0         # lambda of the paper's text: loss = mse + lambda * VLB KL (bits/dim)
    weight_net: str = "sigmoid"    # adaptive only: sigmoid (tables) | softmax (the deeper later net)
    n_samples: int = 10_000        # points sampled for the KL and the plots

    def __post_init__(self):
        # An int given for a float setting (lr=1) must hash like the float (lr=1.0).
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "float" and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))

    def validate(self) -> "TrainConfig":
        """Return self, or raise ValueError with a one-line message naming the bad setting."""
        from .data import DATASETS  # late import: data imports nothing from here

        _choice("dataset", self.dataset, DATASETS)
        _choice("variant", self.variant, VARIANTS)
        _choice("beta_schedule", self.beta_schedule, SCHEDULES)
        _choice("weight_net", self.weight_net, WEIGHT_NETS)
        for name in ("seed", "steps", "batch_size", "n_points", "timesteps", "n_samples"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        for name in ("steps", "batch_size", "n_points", "timesteps", "n_samples"):
            _positive(name, getattr(self, name))
        for name in ("lr", "grad_clip"):
            _positive(name, getattr(self, name))
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0 <= self.weight_decay < 1:
            raise ValueError(f"weight_decay must be in [0, 1), got {self.weight_decay!r}")
        if not 0 <= self.kl_weight <= 100:
            raise ValueError(f"kl_weight must be in [0, 100], got {self.kl_weight!r}")
        if self.batch_size > self.n_points:
            raise ValueError(f"batch_size ({self.batch_size}) exceeds n_points ({self.n_points})")
        if self.timesteps < 2 or self.timesteps > 10_000:
            raise ValueError(f"timesteps must be in 2..10000, got {self.timesteps}")
        if self.n_samples < 10:
            raise ValueError(f"n_samples must be >= 10 (the KL uses k = 5 neighbours), got {self.n_samples}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a dict (e.g. a stored config.json); unknown keys are an error, not ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(names)}")
        return cls(**d).validate()

    @property
    def run_id(self) -> str:
        """Stable 12-hex id of the settings (the device is not part of it)."""
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return f"{self.dataset}-{self.variant}-s{self.seed}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


def _positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be > 0 and finite, got {value!r}")
