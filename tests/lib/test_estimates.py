"""Estimates of how long runs take (dualscale/estimates.py): from the runs most like the planned
one, phase by phase, each scaled by its own size; the ETA of a run in progress to its last phase."""
from types import SimpleNamespace

import pytest

from dualscale import Store, TrainConfig
from dualscale.estimates import estimate_seconds, most_like, phase_seconds, remaining
from dualscale.events import PHASES
from dualscale.runs import run_config
from dualscale.system import machine

PHASE_S = {"eval loss": 4.0, "sampling": 20.0, "oracle sampling": 10.0, "metrics": 3.0}


def fake(variant="adaptive", steps=10_000, n_samples=10_000, cpu=None, shipped=True, training=200.0, phases=PHASE_S):
    config = TrainConfig(dataset="dino", variant=variant, seed=0, steps=steps, n_samples=n_samples)
    made = {"machine": {"cpu": cpu or "another CPU"}, **({"phases": dict(phases)} if phases else {})}
    return SimpleNamespace(config=config, shipped=shipped, made=made,
                           metrics={"training_time": training, "inference_time": 25.0})


def test_the_runs_most_like_the_plan_are_used_shipped_ones_included():
    short_here = fake(steps=300, cpu=machine().get("cpu"), shipped=False, training=30.0)  # under load, another size
    shipped = [fake(training=200.0 + i) for i in range(5)]
    like, basis = most_like([short_here, *shipped], TrainConfig(dataset="dino", variant="adaptive"))
    assert like == shipped and basis.startswith("5 stored adaptive run(s) like it (made on another CPU")
    (expected, _) = phase_seconds([short_here, *shipped], TrainConfig(dataset="dino", variant="adaptive"))
    assert expected["training"] == 202.0 and expected["sampling"] == 20.0
    # the case: two short runs under load must not set the estimate of ten reference runs
    seconds, _ = estimate_seconds([short_here, *shipped], [TrainConfig(dataset="dino", variant="adaptive", seed=s)
                                                          for s in range(10)], workers=1)
    assert seconds == pytest.approx(10 * (202.0 + sum(PHASE_S.values()) + 0.5 + 4.0))


def test_each_phase_scales_with_its_own_size():
    (expected, basis) = phase_seconds([fake(steps=1000, n_samples=1000)], TrainConfig(dataset="dino", variant="adaptive",
                                                                                      steps=4000, n_samples=5000))
    assert basis.endswith("of other sizes, scaled")
    assert expected["training"] == pytest.approx(800.0)            # steps x 4
    assert expected["sampling"] == pytest.approx(100.0)            # samples x 5
    assert expected["eval loss"] == pytest.approx(4.0)             # the same points
    assert phase_seconds([], TrainConfig()) is None


def test_a_run_without_recorded_phases_is_timed_from_what_it_measured():
    (expected, _) = phase_seconds([fake(phases=None)], TrainConfig(dataset="dino", variant="adaptive"))
    assert expected["sampling"] == expected["oracle sampling"] == 25.0  # its inference time
    assert expected["eval loss"] == pytest.approx(200.0 / 10_000 / 3 * 391)


def test_the_eta_runs_to_the_last_phase_and_never_reads_zero_while_a_phase_runs():
    expected = {"training": 100.0, "eval loss": 4.0, "sampling": 20.0, "oracle sampling": 10.0, "metrics": 3.0,
                "saving": 0.5}
    after = sum(expected[p] for p in PHASES)
    assert remaining(expected, 119, 300, 2.0, 0, 0.0) == pytest.approx(181 / 2.0 + after)  # training at its speed
    assert remaining(expected, 0, 300, None, 0, 0.0) == pytest.approx(100.0 + after)       # no speed yet
    # "evaluating 1/5" (the eval loss) running for 1 s: the rest of it and every later phase
    assert remaining(expected, 300, 300, 2.0, 1, 1.0) == pytest.approx(3.0 + 20 + 10 + 3 + 0.5)
    # a phase running longer than expected still has a tenth of it to go
    assert remaining(expected, 300, 300, 2.0, 2, 60.0) == pytest.approx(2.0 + 10 + 3 + 0.5)


def test_a_run_records_the_seconds_of_its_phases(tmp_path):
    config = TrainConfig(dataset="line", variant="baseline", seed=0, steps=40, n_points=512, batch_size=64,
                         n_samples=100)
    list(run_config(config, Store(tmp_path), "cpu"))
    phases = Store(tmp_path).find(config).made["phases"]
    assert list(phases) == list(PHASES[:-1]) and all(s > 0 for s in phases.values())
