"""TrainConfig: everything that decides a run's numbers, with the reference defaults.

Defaults are the experiment that produced the paper's tables (shared/reference.md), not the
paper's prose (which says lr 1e-4, batch 64): those values are reachable as options. Each field
carries its own label, help, bounds and choices (`setting(...)` metadata); validation, the
command line's flags and the dashboard's widgets are all generated from them, so adding a
setting is one field here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field

from .data import DATASETS
from .userdata import is_user_dataset
from .schedules import BETA_END, BETA_SCHEDULES, BETA_START, PREDICTIONS, USES_BETA_END, ZERO_TERMINAL_SNR

VARIANTS = ("baseline", "fixed", "adaptive")
SCHEDULES = tuple(BETA_SCHEDULES)
WEIGHT_NETS = ("sigmoid", "softmax")
SELECTION = ("dataset", "variant", "seed")  # what a sweep varies; the rest are "training settings"
# Settings added after runs were shipped: left out of the run id while at their default, so every
# run stored before them keeps its id (and its folder).
LATER = ("beta_end", "prediction", "compute_precision")
PRECISIONS = ("fp32", "tf32", "bf16")
PER_BATCH_ELEMENT = 14_336  # bytes a training step holds per batch element (measured 13.3 KB, dual-scale)


def setting(default, label: str, help: str, *, choices=None, low=None, high=None, low_open=False,
            high_open=False, why: str = "", step=None, fmt: str | None = None):
    """A config field with what the CLI, the dashboard and validate() need to know about it.

    low/high: bounds (inclusive unless *_open); why: appended to the bound's error message;
    step/fmt: the dashboard number input's step and printf format.
    """
    meta = dict(label=label, help=help, choices=choices, low=low, high=high, low_open=low_open,
                high_open=high_open, why=why, step=step, fmt=fmt)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = setting("dino", "Dataset", "the 2D point cloud to learn", choices=DATASETS)
    variant: str = setting("adaptive", "Variant", "baseline: one branch; fixed: two branches mixed 0.5; "
                           "adaptive: mixed by a learned alpha(t)", choices=VARIANTS)
    seed: int = setting(0, "Seed", "seeds the init, the batches, t, the noise and the sampling", low=0,
                        high=2**63 - 1, why=" (torch's seed range)")
    steps: int = setting(10_000, "Training steps", "optimizer steps", low=0, low_open=True, high=10**8, step=100)
    batch_size: int = setting(256, "Batch size", "points per step (shuffled passes over the data)",
                              low=0, low_open=True, step=32)
    lr: float = setting(3e-4, "Learning rate (peak)", "AdamW peak lr, cosine-annealed to 0 over the steps",
                        low=0, low_open=True, step=1e-4, fmt="%.2e")
    weight_decay: float = setting(0.01, "Weight decay", "AdamW decoupled weight decay", low=0, high=1,
                                  high_open=True, step=0.01, fmt="%.3f")
    grad_clip: float = setting(0.5, "Gradient clip (norm)", "max global gradient norm", low=0, low_open=True,
                               step=0.1, fmt="%.2f")
    n_points: int = setting(100_000, "Training points", "points drawn from the dataset (seed 42, as the "
                            "reference)", low=10, why=" (the metrics use k = 5 neighbours)", step=1000)
    timesteps: int = setting(100, "Diffusion steps T", "diffusion steps", low=2, high=10_000, step=10)
    beta_schedule: str = setting("linear", "Noise schedule", "linear: betas from 1e-4 to beta_end (the paper); "
                                 "cosine: Nichol & Dhariwal 2021; zero_snr: linear rescaled to zero terminal SNR "
                                 "(Lin et al. 2024; needs prediction v)", choices=SCHEDULES)
    beta_end: float = setting(BETA_END, "Last beta (linear, quadratic, zero_snr)", "the last step's beta: 0.02 "
                              "leaves abar_T = 0.364 at T = 100, 0.05 leaves 0.078, 0.1 leaves 0.0056",
                              low=BETA_START, low_open=True, high=0.999, why=" (above the first beta, 1e-4)",
                              step=0.01, fmt="%.4f")
    prediction: str = setting("eps", "Network predicts", "eps: the noise (Ho et al. 2020); v: sqrt(abar) eps - "
                              "sqrt(1 - abar) x0 (Salimans & Ho 2022), defined at SNR 0", choices=PREDICTIONS)
    kl_weight: float = setting(0.0, "KL weight λ", "lambda of the paper's text: loss = MSE + lambda * VLB KL "
                               "(bits/dim)", low=0, high=100, step=0.05, fmt="%.3f")
    weight_net: str = setting("sigmoid", "alpha(t) network (adaptive)", "adaptive only: sigmoid (the tables' "
                              "net) or softmax (the deeper later net)", choices=WEIGHT_NETS)
    compute_precision: str = setting("fp32", "Compute precision", "fp32: bit-identical reruns (the default); tf32: CUDA matmuls "
                             "in TF32; bf16: autocast to bfloat16 (CPUs with bf16 instructions, GPUs)",
                             choices=PRECISIONS)
    n_samples: int = setting(10_000, "Samples for evaluation", "points sampled for the metrics and the plots",
                             low=10, why=" (the KL uses k = 5 neighbours)", step=1000)

    def __post_init__(self):
        # An int given for a float setting (lr=1) must hash like the float (lr=1.0).
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "float" and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))

    def validate(self) -> "TrainConfig":
        """Return self, or raise ValueError with a one-line message naming the bad setting."""
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.batch_size > self.n_points:
            raise ValueError(f"batch_size ({self.batch_size}) exceeds n_points ({self.n_points})")
        if self.beta_schedule in ZERO_TERMINAL_SNR and self.prediction == "eps":
            raise ValueError(f"beta_schedule {self.beta_schedule} reaches SNR 0, where eps is undefined; "
                             "use prediction v")
        if self.beta_end != BETA_END and self.beta_schedule not in USES_BETA_END:
            raise ValueError(f"beta_end applies to the {', '.join(USES_BETA_END)} schedules, not {self.beta_schedule}")
        return self

    def memory_estimate(self) -> int:
        """Bytes this run needs at its peak, roughly: the loss history (device + host copies), the
        training points with their kNN trees and distances, a training step's activations and
        gradients (measured: peak RSS grows by 13.3 KB per batch element for the dual-scale models,
        6 KB for the baseline), the samples with the metrics' trees, the reverse-process trajectory,
        and ~0.5 GB for torch itself."""
        return int(12 * self.steps + 96 * self.n_points + PER_BATCH_ELEMENT * self.batch_size + 96 * self.n_samples
                   + 8 * 1000 * (self.timesteps + 1) + 5e8)

    def check_resources(self, memory: int | None = None) -> "TrainConfig":
        """Return self, or raise ValueError if the run cannot fit this machine's memory (before any work)."""
        memory = physical_memory() if memory is None else memory
        need = self.memory_estimate()
        if need > memory // 2:
            big = max(("steps", 12 * self.steps), ("n_points", 96 * self.n_points), ("n_samples", 96 * self.n_samples),
                      ("batch_size", PER_BATCH_ELEMENT * self.batch_size), key=lambda kv: kv[1])[0]
            raise ValueError(f"this run needs about {need / 2**30:.1f} GiB of memory, more than half of this "
                             f"machine's {memory / 2**30:.1f} GiB; lower {big} ({getattr(self, big):,})")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a dict (e.g. a stored config.json); unknown keys are an error, not ignored."""
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(names)}")
        return cls(**d).validate()

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"the config is not valid JSON ({e.msg} at character {e.pos})")
        except RecursionError:
            raise ValueError("the config is nested too deeply to be a config (a JSON object of settings)")

    @property
    def run_id(self) -> str:
        """Stable 12-hex id of the settings (the device is not part of it)."""
        d = self.to_dict()
        blob = json.dumps({k: v for k, v in d.items() if k not in LATER or v != getattr(TrainConfig, k)}, sort_keys=True)
        return f"{self.dataset}-{self.variant}-s{self.seed}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def physical_memory() -> int:
    """This machine's memory in bytes (8 GiB where the OS does not say)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 8 << 30


_WHOLE = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: str.isdigit() accepts "²", int() refuses it
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_setting(name: str, text: str):
    """One setting's value from text (an address, a form), strictly; a ValueError in one line otherwise."""
    f = {f.name: f for f in fields()}.get(name)
    if f is None:
        raise ValueError(f"unknown setting {name!r}")
    if f.metadata["choices"] is not None:
        value = text
    elif f.type == "int":
        if not _WHOLE.fullmatch(text):
            raise ValueError(f"{name} must be a whole number, got {text!r}")
        value = int(text)
    else:
        if not _NUMBER.fullmatch(text):
            raise ValueError(f"{name} must be a number, got {text!r}")
        value = float(text)
    _check(f, value)
    return value


def fields() -> tuple[dataclasses.Field, ...]:
    """Every setting, in order, with its metadata (label, help, choices, bounds, step, fmt)."""
    return dataclasses.fields(TrainConfig)


def training_settings() -> tuple[dataclasses.Field, ...]:
    """The settings other than dataset, variant and seed."""
    return tuple(f for f in fields() if f.name not in SELECTION)


def same_settings(a: "TrainConfig", b: "TrainConfig") -> bool:
    """Whether two configs share every training setting (dataset, variant and seed may differ): runs of one experiment."""
    return all(getattr(a, f.name) == getattr(b, f.name) for f in training_settings())


def changed_settings(config) -> dict:
    """The training settings that differ from the reference defaults, {name: value}; config: a
    TrainConfig or a mapping of field names (a row of a metrics frame)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return {f.name: get(f.name) for f in training_settings() if get(f.name, f.default) != f.default}


def settings_tag(config) -> str:
    """'' at the reference settings, else 'steps=500, lr=0.001': how the verdict labels an experiment."""
    return ", ".join(f"{k}={v}" for k, v in changed_settings(config).items())


def bounds_text(f: dataclasses.Field) -> str | None:
    """'> 0 and finite', '>= 0', 'in [0, 1)', 'in 2..10000': the field's bounds in words."""
    m = f.metadata
    lo, hi = m["low"], m["high"]
    if lo is None and hi is None:
        return None
    if hi is None:
        if m["low_open"]:
            return f"> {lo}" if f.type == "int" else f"> {lo} and finite"
        return f">= {lo}"
    if f.type == "int":
        return f"in {lo + 1 if m['low_open'] else lo}..{hi}"
    return f"in {'(' if m['low_open'] else '['}{lo}, {hi}{')' if m['high_open'] else ']'}"


def _check(f: dataclasses.Field, value) -> None:
    m, name = f.metadata, f.name
    if m["choices"] is not None:
        if value not in m["choices"] and not (name == "dataset" and is_user_dataset(value)):
            raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(m['choices'])}"
                             + (" (or your own: --data-file)" if name == "dataset" else ""))
        return
    if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if f.type == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    lo, hi = m["low"], m["high"]
    finite = isinstance(value, int) or math.isfinite(value)  # a huge int has no float
    inside = finite and (
        lo is None or (value > lo if m["low_open"] else value >= lo)) and (
        hi is None or (value < hi if m["high_open"] else value <= hi))
    if not inside:
        raise ValueError(f"{name} must be {bounds_text(f)}, got {value!r}{m['why']}")
