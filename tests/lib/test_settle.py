"""settle: seeds added until the family is decided or the budget is spent; resumable after SIGKILL."""
import math
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from dualscale import Store, TrainConfig
from dualscale.settle import plan
from support import ROOT

SMALL = ["--steps", "100", "--n-points", "1024", "--batch-size", "128", "--n-samples", "200"]
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
    assert "== primary (12 comparisons, each interval at 0.05/12; exploratory" in out
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


def test_settle_refuses_bad_input_in_one_line_before_it_makes_anything(cli, tmp_path):
    store = tmp_path / "store"
    for args, message in ((["--budget-seeds", "1"], "--budget-seeds must be in 2..100000"),
                          (["--budget-seeds", "1000000000"], "--budget-seeds must be in 2..100000"),
                          (["--budget-seeds", "5", "--batch", "10"], "--batch in 1..--budget-seeds"),
                          (["--datasets", "nope"], "unknown dataset 'nope'"),
                          (["--metric", "training_time"], "invalid choice"),
                          (["--family", "nope"], "unknown --family 'nope'; choose from: primary, confirmatory"),
                          (["--family", "confirmatory", "--datasets", "circle"], "declared on dino"),
                          (["--family", "confirmatory", "--steps", "100"], "declared at the reference settings"),
                          (["--family", "confirmatory"], "holds no shipped runs")):
        r = cli("settle", *args, store=store)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "settle:" not in r.stderr  # one line, no bar
        assert not store.exists()  # no store, no locks folder


def test_the_confirmatory_plan_asks_for_fresh_dino_seeds_only_and_drops_baseline_once_its_pairs_are_decided():
    explored = {("dino", v): [1.0 - 0.1 * (v != "baseline") + 0.01 * s for s in range(68)]
                for v in ("baseline", "fixed", "adaptive")}
    rnd = plan(fake_runs(explored), TrainConfig(), budget_seeds=100, batch=4, family="confirmatory")
    assert rnd.missing == ["dino"] and rnd.family == []  # no fresh seed yet: the exploratory 68 do not count
    assert {(c.variant, c.seed) for c in rnd.todo} == {(v, s) for v in ("baseline", "fixed", "adaptive")
                                                       for s in range(68, 72)}
    # 40 fresh seeds: both dual-scale models beat the baseline in every one; adaptive - fixed alternates
    fresh = {k: v + [1.0 - 0.1 * (k[1] != "baseline") + (0.01 * (-1) ** s if k[1] == "adaptive" else 0)
                     for s in range(68, 108)] for k, v in explored.items()}
    rnd = plan(fake_runs(fresh), TrainConfig(), budget_seeds=100, batch=5, family="confirmatory")
    words = {(c.a, c.b): (c.decision, c.n, c.family) for c in rnd.family}
    assert words == {("adaptive", "baseline"): ("better in most seeds", 40, "confirmatory"),
                     ("fixed", "baseline"): ("better in most seeds", 40, "confirmatory"),
                     ("adaptive", "fixed"): ("undecided", 40, "confirmatory")}
    assert {(c.variant, c.seed) for c in rnd.todo} == {(v, s) for v in ("adaptive", "fixed") for s in range(108, 113)}
    spent = plan(fake_runs(fresh), TrainConfig(), budget_seeds=40, batch=5, family="confirmatory")
    assert spent.todo == [] and spent.spent


def test_a_settle_of_a_users_data_names_its_own_family(cli, tmp_path):
    csv = tmp_path / "ring.csv"
    csv.write_text("x,y\n" + "\n".join(f"{np.cos(i / 7):.4f},{np.sin(i / 7):.4f}" for i in range(60)))
    r = cli("settle", "--data-file", str(csv), "--budget-seeds", "2", "--batch", "2", "--jobs", "1",
            "--steps", "20", "--n-points", "256", "--batch-size", "64", "--n-samples", "64", store=tmp_path / "s")
    assert r.returncode == 0, r.stderr
    assert "secondary: kl_divergence on ring-" in r.stderr and "(3 comparisons)" in r.stderr
    assert "12 comparisons" not in r.stderr
