"""dualscale: the adaptive dual-scale denoising experiment, reproduced (see README.md)."""
from .config import VARIANTS, TrainConfig
from .data import DATASETS, PAPER_DATASETS, make_dataset
from .metrics import kl_divergence
from .reproduce import METRICS, PAPER_TABLES
from .runs import resolve_device, run_config
from .store import Run, RunInProgress, Store, StoreError

__all__ = ["VARIANTS", "TrainConfig", "DATASETS", "PAPER_DATASETS", "make_dataset", "kl_divergence",
           "METRICS", "PAPER_TABLES", "resolve_device", "run_config", "Run", "RunInProgress", "Store",
           "StoreError"]
