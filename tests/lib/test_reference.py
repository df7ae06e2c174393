"""The shipped reference runs (checkpoints/reference/): complete, intact, and faithful to the paper."""
from pathlib import Path

import numpy as np
import pytest

from dualscale import PAPER_DATASETS, VARIANTS, Store, TrainConfig, kl_divergence, make_dataset
from dualscale.paper import fidelity, metrics_frame
from dualscale.stats import CONFIRM
from support import ROOT

REFERENCE = Path(__file__).resolve().parents[2] / "checkpoints"


@pytest.fixture(scope="module")
def runs():
    store = Store(REFERENCE)
    found = {}
    for v in VARIANTS:
        for d in PAPER_DATASETS:
            run = store.find(TrainConfig(dataset=d, variant=v, seed=0))
            assert run is not None and run.shipped, f"missing shipped run {d}/{v}"
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


SEEDS = range(10)


@pytest.fixture(scope="module")
def all_runs():
    """Every shipped run at the reference settings: seeds 0-9 of the paper's 12 runs."""
    store = Store(REFERENCE)
    return {(r.config.dataset, r.config.variant, r.config.seed): r for r in store.runs()
            if r.path.parent.name == "reference" and r.config == TrainConfig(dataset=r.config.dataset,
                                                                            variant=r.config.variant, seed=r.config.seed)}


def test_ten_seeds_of_all_twelve_runs_ship_and_record_how_they_were_made(all_runs):
    missing = [(d, v, s) for d in PAPER_DATASETS for v in VARIANTS for s in SEEDS if (d, v, s) not in all_runs]
    assert not missing, f"missing shipped runs: {missing[:5]}"
    for (d, v, s), run in all_runs.items():
        assert run.light == (s > 0), run.id  # seed 0 with weights and trajectory, the rest light
        made = run.made
        assert made["device"] == "cpu" and made["half"] is True and made["torch"].startswith("2.13.0")
        assert made["command"] == (f"python -m dualscale reproduce --datasets {d} --variants {v} --seeds {s} "
                                   "--device cpu --jobs 1 --half --store TMP")
        assert set(run.metrics) >= {"kl_divergence", "eval_loss", "sliced_w2", "precision", "recall"}


def test_every_seed_is_recomputable_from_what_ships(all_runs):
    """The KL and the other sample metrics from the shipped samples give the recorded values
    (seed 0 in full above; here a rotating dataset of every other seed, to keep the test short)."""
    from dualscale.metrics import METRICS

    for s in range(1, 10):
        d = PAPER_DATASETS[s % len(PAPER_DATASETS)]
        run = all_runs[d, "adaptive", s]
        real, samples = make_dataset(d), run.samples()
        for name in ("kl_divergence", "sliced_w2", "precision", "recall"):
            assert METRICS[name].from_samples(real, samples) == pytest.approx(run.metrics[name], abs=1e-12), (run.id, name)
        assert run.loss_history().shape == (10_000,) and run.alpha().shape == (100,)


def test_the_schedule_study_ships_whole_small_and_recomputable():
    """checkpoints/study/: seeds 0-9 of the 12 runs under cosine and zero-SNR + v, light, <= 10 MB,
    each metric recomputable from the stored float16 samples (a rotating sample of runs)."""
    from dualscale.metrics import METRICS

    study = [r for r in Store(REFERENCE).runs() if r.path.parent.name == "study"]
    kinds = {(r.config.beta_schedule, r.config.prediction) for r in study}
    assert kinds == {("cosine", "eps"), ("zero_snr", "v")} and len(study) == 240
    assert sum(p.stat().st_size for r in study for p in r.path.iterdir()) <= 10_000_000
    for i, run in enumerate(sorted(study, key=lambda r: r.id)[::37]):
        assert run.light and run.made["samples"] == "float16" and "--light" in run.made["command"]
        real, samples = make_dataset(run.config.dataset), run.samples()
        for name in ("kl_divergence", "precision"):
            assert METRICS[name].from_samples(real, samples) == run.metrics[name], (run.id, name)
        assert {"kl_oracle_start", "start_mismatch"} <= set(run.metrics)
        assert run.loss_history().shape == (10_000,)


def test_the_shipped_verdict_cache_is_the_verdict_of_the_shipped_runs():
    """The Verdict page answers a fresh server from reference/cache (no pandas, no scipy on the
    first render); it must be exactly what verdict_of() computes on every shipped run today."""
    import json

    from dualscale.stats import CACHE_NAME, JUDGED, Verdicts, runs_key, verdict_of

    runs = [r for r in Store(REFERENCE).runs() if r.shipped]
    key = runs_key(runs, JUDGED)
    shipped = REFERENCE / "reference" / "cache" / f"{CACHE_NAME}-{key}.json"
    assert shipped.is_file(), "re-make the shipped verdict cache (docs/store.md)"
    kept = json.loads(shipped.read_text())
    fresh = json.loads(json.dumps(verdict_of(runs).to_json()))
    assert kept["key"] == key and kept["value"] == fresh
    assert Verdicts.from_json(fresh).comparisons == verdict_of(runs).comparisons
    assert [p.name for p in shipped.parent.iterdir()] == [shipped.name]  # no stale verdict ships beside it


def test_the_shipped_verdict_claims_nothing_the_runs_do_not_carry():
    """Issue 18's promise, on what ships: no better/worse in KL on circle, line or moons (the paper's
    differences there are far inside the 0.02-bit margin), and no better/worse anywhere (the schedule
    study's settings too) whose sequence lies inside the margin; every word is what decide() says of
    its own interval, at the family's Bonferroni level."""
    from dualscale.metrics import METRICS
    from dualscale.stats import decide, decide_proportion, verdict_of

    verdict = verdict_of([r for r in Store(REFERENCE).runs() if r.shipped])
    primary = [c for c in verdict.family("primary") if c.settings == ""]  # the reference settings
    assert len(primary) == 12 and {c.dataset for c in primary} == set(PAPER_DATASETS)
    assert [c for c in primary if c.dataset != "dino" and c.directional] == []
    assert all(c.decision == "no practical difference" for c in primary if c.dataset != "dino")
    from dualscale.sentences import answer

    dino = {(c.a, c.b): c for c in primary if c.dataset == "dino"}
    lines = answer(primary, verdict.family("confirmatory"))  # the page's first lines: the answer, with numbers
    assert len(lines) == 3
    assert lines[0].startswith("**dino** (") and all(f"{a} " in lines[0] for a, b in dino if b == "baseline")
    claim = dino["adaptive", "fixed"]
    assert lines[1].startswith("**The paper's own claim**, a learned alpha(t) against a fixed 0.5 on dino: ")
    assert (f"after {claim.n} seeds" in lines[1]) == (claim.decision == "undecided")
    assert lines[2] == "**circle, line and moons**: no practical difference (10 seeds each)."
    fresh = {(f.a, f.b): f for f in verdict.family("confirmatory")}  # the fresh seeds' answer beside each
    assert len(fresh) == 3
    for (a, b), f in fresh.items():
        assert f"in {f.wins} of {f.n}" in lines[1 if (a, b) == ("adaptive", "fixed") else 0], (a, b)
    f = fresh["adaptive", "fixed"]
    assert ("full budget" in lines[1]) == (f.decision == "undecided" and f.n >= CONFIRM.max_seeds)
    for c in verdict.comparisons:
        margin = METRICS[c.metric].margin
        inside = -margin <= c.cs_low and c.cs_high <= margin
        assert not (inside and c.directional), (c.dataset, c.metric, c.a, c.b, c.cs_low, c.cs_high)
        if c.family == "confirmatory":  # decided by the share of wins, at 0.05/3
            assert c.decision == decide_proportion(c.pi_low, c.pi_high) and c.family_size == 3
            assert min(c.seeds) >= CONFIRM.first_seed and c.dataset == CONFIRM.dataset
            continue
        assert c.decision == decide(c.cs_low, c.cs_high, c.mean_diff, c.metric)
        assert c.family_size == 12 and c.level == 0.05 / 12


def test_the_evidence_ships_light_small_and_recomputable():
    """checkpoints/evidence/: the seeds that settle the primary family (dino, seeds 10-67, made by
    `settle` or its runs) and the confirmatory family (seeds 68 and up, complete at its budget of 100
    fresh seeds): light, within 17 MB, each with its eval loss per timestep and the machine it ran on,
    every metric recomputable from the float16 samples (a rotating sample); a seed's runs come from
    one engine on one device, so every pair compares like with like."""
    from dualscale.metrics import METRICS

    evidence = [r for r in Store(REFERENCE).runs() if r.path.parent.name == "evidence"]
    assert evidence, "no evidence runs ship"
    assert sum(p.stat().st_size for r in evidence for p in r.path.iterdir()) <= 17_000_000
    engines = {}
    for run in evidence:
        if run.config.seed >= CONFIRM.first_seed:
            engines.setdefault(run.config.seed, set()).add((run.made["engine"]["name"], run.made["device"]))
    assert all(len(e) == 1 for e in engines.values()), {s: e for s, e in engines.items() if len(e) > 1}
    for run in evidence:
        assert run.config == TrainConfig(dataset=run.config.dataset, variant=run.config.variant, seed=run.config.seed)
        assert run.config.seed >= 10 and run.light and run.made["samples"] == "float16"
        # the exploratory seeds were made with float16 weights (--half); the confirmatory ones in fp32,
        # each recording its engine
        assert run.made["half"] == (run.config.seed < CONFIRM.first_seed), run.id
        assert run.config.seed < CONFIRM.first_seed or run.made["engine"]["name"] in ("single", "stacked")
        assert run.made["machine"]["cpu"] and run.made["machine"]["flags"] and "--light" in run.made["command"]
        assert run._arrays("arrays.npz")["eval_loss_by_t"].shape == (100,)
    for run in sorted(evidence, key=lambda r: r.id)[::29]:
        real, samples = make_dataset(run.config.dataset), run.samples()
        for name in ("kl_divergence", "precision"):
            assert METRICS[name].from_samples(real, samples) == pytest.approx(run.metrics[name], abs=1e-12), (run.id, name)


def test_every_shipped_run_json_is_covered_by_its_manifest_or_its_digest():
    """An edit in place of a shipped run.json shows: each is listed (with its SHA-256) in its folder's
    MANIFEST.json or carries its own digest."""
    import hashlib
    import json

    for folder in ("reference", "study", "evidence"):
        manifest = json.loads((REFERENCE / folder / "MANIFEST.json").read_text())["runs"]
        for run_json in sorted((REFERENCE / folder).glob("*/run.json")):
            raw = run_json.read_bytes()
            assert "digest" in json.loads(raw) or manifest.get(run_json.parent.name) == hashlib.sha256(raw).hexdigest(), \
                run_json


def test_the_readme_and_docs_quote_what_the_shipped_runs_give():
    """README's answer and docs/verdict.md's tables are remade from the shipped runs by
    docs/refresh.py: a run added, removed or edited without them fails here, naming the block."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "docs/refresh.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
