"""dualscale: the adaptive dual-scale denoising experiment, reproduced (see README.md).

Importing the package is light (no torch, no scipy): the dashboard reads stored runs without
them. Training entry points import torch on first use.

GOMP_SPINCOUNT=10000 (unless a wait policy or spin count is set): torch's OpenMP threads spin a
short while, then sleep, while they wait. Measured in one run (benchmarks/results/under_load.txt,
2 cores, dino adaptive, ms per training step): quiet, two threads took 8.3 ms with it, 7.4 with the
best spin count (100k), 8.0 spinning forever (ACTIVE) and 13.4 sleeping at once (PASSIVE, as slow
as one thread, the default before); beside two busy processes 1.51x one thread with it, 1.88x at
100k, 2.9x ACTIVE, 1.04x PASSIVE. It must be set before torch loads libgomp, so here, before
anything imports torch.
"""
import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
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
