"""settle: seeds added until the family is decided or the budget is spent; resumable after SIGKILL."""
import math
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from dualscale import Store, TrainConfig
from dualscale.settle import plan
from support import ROOT

SMALL = ["--steps", "200", "--n-points", "1024", "--batch-size", "128", "--n-samples", "300"]
SETTLE = ["settle", "--datasets", "line", "--budget-seeds", "6", "--batch", "2", "--jobs", "2", *SMALL]


def fake_runs(values: dict) -> list:
    """Runs as plan() reads them: {(dataset, variant): [KL per seed]}."""
    out = []
    for (dataset, variant), kls in values.items():
        for seed, kl in enumerate(kls):
            config = TrainConfig(dataset=dataset, variant=variant, seed=seed)
            out.append(SimpleNamespace(id=config.run_id, config=config, shipped=False,
                                       metrics={"kl_divergence": kl, "eval_loss": 0.6, "training_time": 1.0,
                                                "inference_time": 1.0}))
    return out


def test_plan_asks_only_for_the_variants_and_seeds_that_can_decide():
    wobble = [0.001, -0.001, 0.0005, -0.0005, 0.0, 0.001, -0.001, 0.0, 0.0005, -0.0005]
    runs = fake_runs({("circle", v): [0.35 + w for w in wobble] for v in ("baseline", "fixed", "adaptive")}
                     | {("dino", "baseline"): [1.0 + 0.3 * math.sin(s) for s in range(10)],
                        ("dino", "fixed"): [0.9 + 0.3 * math.sin(s) + 0.2 * math.cos(3 * s) for s in range(10)],
                        ("dino", "adaptive"): [0.9 + 0.3 * math.sin(s) for s in range(10)]})
    rnd = plan(runs, TrainConfig(), datasets=("circle", "dino", "moons"), budget_seeds=13, batch=5)
    assert {(c.dataset, c.decision) for c in rnd.family if c.dataset == "circle"} == {("circle", "no practical difference")}
    assert rnd.missing == ["moons"]  # no runs: all three variants from seed 0
    dino = {c.b for c in rnd.open if c.dataset == "dino"} | {c.a for c in rnd.open if c.dataset == "dino"}
    todo = {(c.dataset, c.variant, c.seed) for c in rnd.todo}
    assert {(d, v, s) for d, v, s in todo if d == "dino"} == {("dino", v, s) for v in dino for s in (10, 11, 12)}
    assert {(d, v, s) for d, v, s in todo if d == "moons"} == {("moons", v, s) for v in ("baseline", "fixed", "adaptive")
                                                               for s in range(5)}
    assert not any(d == "circle" for d, _, _ in todo) and not rnd.spent
    spent = plan(runs, TrainConfig(), datasets=("dino",), budget_seeds=10, batch=5)
    assert spent.todo == [] and spent.spent and spent.open


def settle(store, *extra, **kw):
    return subprocess.Popen([sys.executable, "-m", "dualscale", *SETTLE, "--store", str(store), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def numbers(store) -> dict:
    return {r.id: (r.metrics["kl_divergence"], r.metrics["eval_loss"]) for r in Store(store).runs()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    store = tmp_path_factory.mktemp("settle_once")
    p = settle(store)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return store, out, err


def test_a_small_settle_stops_at_a_decision_or_the_budget_and_prints_the_table(uninterrupted):
    store, out, err = uninterrupted
    assert "== primary (12 comparisons, each sequence at 0.05/12)" in out
    assert sum(line.startswith("line ") for line in out.splitlines()) == 3  # the table: three pairs on line
    assert ("budget spent" in out) or ("decided: every comparison" in out)
    seeds = {(r.config.variant, r.config.seed) for r in Store(store).runs()}
    assert {s for _, s in seeds} <= set(range(6))  # never past the budget
    if "budget spent" in out:
        assert seeds == {(v, s) for v in ("baseline", "fixed", "adaptive") for s in range(6)}
    assert "settle:" in err  # one progress bar over the runs


def test_a_settle_killed_mid_batch_retrains_nothing_and_ends_with_the_same_numbers(uninterrupted, tmp_path):
    p = settle(tmp_path, start_new_session=True)
    deadline = time.time() + 600
    while len(Store(tmp_path).runs()) < 4 and time.time() < deadline:  # the second round has begun
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)  # the client and its workers, at once
    p.wait()
    before = {r.id: os.stat(r.path / "run.json").st_ino for r in Store(tmp_path).runs()}
    assert 4 <= len(before) < 18
    again = settle(tmp_path)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    after = {r.id: os.stat(r.path / "run.json").st_ino for r in Store(tmp_path).runs()}
    assert all(after[i] == ino for i, ino in before.items())  # nothing stored was written again
    assert numbers(tmp_path) == numbers(uninterrupted[0])
    assert out.splitlines()[-4:] == uninterrupted[1].splitlines()[-4:]  # the same table, the same words


def test_settle_refuses_bad_input_in_one_line(cli, tmp_path):
    for args, message in ((["--budget-seeds", "1"], "--budget-seeds must be >= 2"),
                          (["--datasets", "nope"], "unknown dataset 'nope'"),
                          (["--metric", "training_time"], "invalid choice")):
        r = cli("settle", *args, store=tmp_path)
        assert r.returncode == 2 and message in r.stderr, r.stderr
