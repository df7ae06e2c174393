"""dualscale: the adaptive dual-scale denoising experiment, reproduced (see README.md).

Importing the package is light (no torch, no scipy): the dashboard reads stored runs without
them. Training entry points import torch on first use.

OMP_WAIT_POLICY=PASSIVE (unless set): torch's OpenMP threads sleep instead of spinning while they
wait. On a busy 2-core machine a two-thread run whose threads spun took 6x as long as one thread;
passive, it is as fast as one (benchmarks/under_load.py). It must be set before torch loads
libgomp, so here, before anything imports torch.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .config import VARIANTS, TrainConfig  # noqa: E402
from .data import DATASETS, PAPER_DATASETS, make_dataset
from .metrics import METRICS, kl_divergence
from .paper import PAPER_TABLES
from .store import Run, RunInProgress, Store, StoreError

__all__ = ["VARIANTS", "TrainConfig", "DATASETS", "PAPER_DATASETS", "make_dataset", "kl_divergence",
           "METRICS", "PAPER_TABLES", "resolve_device", "run_config", "Run", "RunInProgress", "Store",
           "StoreError"]


def __getattr__(name: str):
    if name == "run_config":
        from .runs import run_config

        return run_config
    if name == "resolve_device":
        from .system import resolve_device

        return resolve_device
    raise AttributeError(f"module 'dualscale' has no attribute {name!r}")
