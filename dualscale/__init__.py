"""dualscale: the adaptive dual-scale denoising experiment, reproduced (see README.md).

Importing the package is light (no torch, no scipy): the dashboard reads stored runs without
them. Training entry points import torch on first use.
"""
from .config import VARIANTS, TrainConfig
from .data import DATASETS, PAPER_DATASETS, make_dataset
from .metrics import kl_divergence
from .reproduce import METRICS, PAPER_TABLES
from .store import Run, RunInProgress, Store, StoreError

__all__ = ["VARIANTS", "TrainConfig", "DATASETS", "PAPER_DATASETS", "make_dataset", "kl_divergence",
           "METRICS", "PAPER_TABLES", "resolve_device", "run_config", "Run", "RunInProgress", "Store",
           "StoreError"]


def __getattr__(name: str):
    if name in ("run_config", "resolve_device"):
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'dualscale' has no attribute {name!r}")
