"""The shipped reference runs (checkpoints/reference/): complete, intact, and faithful to the paper."""
from pathlib import Path

import numpy as np
import pytest

from dualscale import PAPER_DATASETS, VARIANTS, Store, TrainConfig, kl_divergence, make_dataset
from dualscale.paper import fidelity, metrics_frame

REFERENCE = Path(__file__).resolve().parents[2] / "checkpoints"


@pytest.fixture(scope="module")
def runs():
    store = Store(REFERENCE)
    found = {}
    for v in VARIANTS:
        for d in PAPER_DATASETS:
            run = store.find(TrainConfig(dataset=d, variant=v, seed=0))
            assert run is not None and run.is_reference, f"missing shipped run {d}/{v}"
            found[d, v] = run
    return found


def test_all_twelve_runs_ship_and_are_inside_the_fidelity_bounds(runs):
    assert len(runs) == 12
    assert fidelity(metrics_frame(runs.values())) == []


def test_shipped_kl_is_recomputed_from_shipped_samples(runs):
    """The stored KL is exactly the estimator on the stored samples and the seed-42 data."""
    for (dataset, _), run in runs.items():
        samples = run.samples()
        assert samples.shape == (10_000, 2)
        assert kl_divergence(make_dataset(dataset), samples) == pytest.approx(run.metrics["kl_divergence"], abs=1e-12)


def test_shipped_weights_load_and_match_alpha(runs):
    for (_, variant), run in runs.items():
        model = run.load_model("ema")
        alpha = run.alpha()
        if variant == "baseline":
            assert alpha is None
        else:
            np.testing.assert_allclose(model.alpha_table().detach().numpy(), alpha, atol=1e-6)
        ts, traj = run.trajectory()
        assert traj.shape == (101, 1000, 2) and ts[0] == 100 and ts[-1] == 0
