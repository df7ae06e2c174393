"""The verdict's statistics and the sample metrics, on cases whose answers are worked out by hand."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from dualscale import Store, TrainConfig, make_dataset, run_config
from dualscale.__main__ import parser
from dualscale.metrics import METRICS, floor, precision, recall, sliced_w2
from dualscale.sequential import project, proportion_sequence
from dualscale.stats import ALPHA, DECISIONS, compare, decide, holm, paired_t, winners

# A fixed table of paired values: a - b = [0.10, 0.02, 0.05, 0.20, 0.04].
A = np.array([1.10, 1.00, 0.95, 1.20, 1.05])
B = np.array([1.00, 0.98, 0.90, 1.00, 1.01])


def test_paired_t_interval_and_p_worked_by_hand():
    mean, sd, lo, hi, p = paired_t(A - B)
    # mean 0.082; squared deviations sum to 0.02088, so sd = sqrt(0.02088 / 4)
    assert mean == pytest.approx(0.082) and sd == pytest.approx(math.sqrt(0.00522))
    half = 2.776445 * math.sqrt(0.00522) / math.sqrt(5)  # t(0.975, 4 df) from a printed table
    assert (lo, hi) == (pytest.approx(0.082 - half, abs=1e-6), pytest.approx(0.082 + half, abs=1e-6))
    t = 0.082 / (math.sqrt(0.00522) / math.sqrt(5))
    x = t / math.sqrt(4 + t * t)  # Student t with 4 df in closed form: F(t) = 1/2 + 3/4 x (1 - x^2 / 3)
    assert p == pytest.approx(2 * (1 - (0.5 + 0.75 * x * (1 - x * x / 3))), rel=1e-9)


def test_holm_worked_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 -> 4 x 0.01, 3 x 0.03, max(2 x 0.04, 0.09), 0.2
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def frame(rows):
    return pd.DataFrame([{"run_id": f"{d}-{v}-{s}", "dataset": d, "variant": v, "seed": s, "steps": 100, **m}
                         for d, v, s, m in rows])


@pytest.mark.parametrize("low, high, word", [
    (-0.30, -0.05, "better"),                       # entirely beyond the margin (KL: 0.02 bits)
    (-0.30, -0.01, "better, size unclear"),         # excludes 0, reaches inside the margin
    (-0.015, 0.012, "no practical difference"),     # inside +- the margin
    (0.005, 0.015, "no practical difference"),      # inside and excluding 0: real but negligible
    (0.01, 0.30, "worse, size unclear"),
    (0.05, 0.30, "worse"),
    (-0.30, 0.10, "undecided"),
    (-math.inf, math.inf, "undecided"),
])
def test_each_decision_word_on_a_constructed_interval(low, high, word):
    assert decide(low, high, (low + high) / 2 if math.isfinite(low) else 0.0, "kl_divergence") == word
    assert word in DECISIONS


def test_decisions_on_constructed_runs_use_the_sequence_at_the_family_level():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(30):
        noise = rng.normal(0, 0.01)
        rows += [("dino", "baseline", s, {"kl_divergence": 1.0 + noise, "eval_loss": 0.66}),
                 ("dino", "adaptive", s, {"kl_divergence": 0.8 + noise + rng.normal(0, 0.01),   # far below: better
                                          "eval_loss": 0.66 + rng.normal(0, 0.0002)}),          # tiny: no difference
                 ("moons", "baseline", s, {"kl_divergence": 0.09, "eval_loss": 0.61}),
                 ("moons", "adaptive", s, {"kl_divergence": 0.09 + rng.normal(0, 0.2),          # noisy: undecided
                                           "eval_loss": 0.61 + 0.0022 + rng.normal(0, 0.001)})]  # above, size unclear
    v = compare(frame(rows), ["kl_divergence", "eval_loss"])
    words = {(c.dataset, c.metric): c for c in v.comparisons}
    better = words["dino", "kl_divergence"]
    assert better.decision == better.verdict == "better" and better.cs_high < -0.02
    assert better.family == "primary" and better.family_size == 12 and better.level == ALPHA / 12
    assert words["dino", "eval_loss"].decision == "no practical difference"
    assert words["dino", "eval_loss"].family == "secondary: eval_loss"
    assert words["moons", "eval_loss"].decision == "worse, size unclear"
    noisy = words["moons", "kl_divergence"]
    assert noisy.decision == "undecided" and noisy.n == 30
    assert noisy.cs_low < noisy.ci_low and noisy.ci_high < noisy.cs_high  # the sequence is the wider
    pr = project(noisy.mean_diff, noisy.sd, 0.02, ALPHA / 12, (noisy.ci_low, noisy.ci_high))
    assert (noisy.n50, noisy.n80, noisy.n50_low_end, noisy.n50_high_end) == (pr.n50, pr.n80, *pr.n50_range)
    assert better.n50 is None and better.projected == ""  # decided: nothing to project
    assert winners(v.comparisons) == {("dino", "kl_divergence"): "adaptive", ("moons", "eval_loss"): "baseline"}
    # a third variant with runs there but no pairs has not been beaten: no winner on dino
    assert ("dino", "kl_divergence") not in winners(v.comparisons, {"dino": {"baseline", "adaptive", "fixed"}})
    assert all(c.boot_low <= c.mean_diff <= c.boot_high for c in v.comparisons)


def test_a_family_does_not_depend_on_what_else_is_compared():
    """The family is declared: judging KL alone or with every metric gives the same decisions and
    intervals (Results and Verdict cannot disagree)."""
    rng = np.random.default_rng(3)
    rows = [(d, v, s, {"kl_divergence": 0.5 + rng.normal(0, 0.05) - (0.06 if v == "adaptive" else 0),
                       "eval_loss": 0.6 + rng.normal(0, 0.001), "precision": 0.9 + rng.normal(0, 0.01)})
            for s in range(12) for d in ("dino", "circle") for v in ("baseline", "fixed", "adaptive")]
    alone = compare(frame(rows), ["kl_divergence"]).comparisons
    together = [c for c in compare(frame(rows), ["kl_divergence", "eval_loss", "precision"]).comparisons
                if c.metric == "kl_divergence"]
    key = lambda c: (c.dataset, c.a, c.b, c.decision, c.cs_low, c.cs_high)  # noqa: E731
    assert sorted(map(key, alone)) == sorted(map(key, together))


def test_higher_is_better_metrics_turn_the_verdict_around():
    wobble = [0.003, -0.002, 0.001, -0.003, 0.002, 0.0, -0.001, 0.0]  # mean 0: the difference is 0.1
    rows = [(d, v, s, {"precision": base + (0.1 + wobble[s] if v == "adaptive" else 0) + 0.001 * s})
            for s in range(8) for v in ("baseline", "adaptive") for d, base in (("dino", 0.6),)]
    (c,) = compare(frame(rows), ["precision"]).comparisons
    assert c.mean_diff == pytest.approx(0.1) and c.decision == "better" and c.cs_low > 0.01
    flipped = compare(frame([(d, "adaptive" if v == "baseline" else "baseline", s, m) for d, v, s, m in rows]),
                      ["precision"]).comparisons[0]
    assert flipped.mean_diff == pytest.approx(-0.1) and flipped.decision == "worse"


def test_runs_without_a_partner_are_reported_and_other_settings_not_pooled():
    rows = [("line", v, s, {"kl_divergence": 0.15 + 0.01 * s}) for v in ("baseline", "adaptive") for s in (0, 1)]
    rows.append(("line", "adaptive", 7, {"kl_divergence": 0.2}))
    f = frame(rows)
    f.loc[len(f)] = {"run_id": "other", "dataset": "line", "variant": "baseline", "seed": 7, "steps": 500,
                     "kl_divergence": 0.1}
    v = compare(f, ["kl_divergence"])
    assert [(c.n, c.seeds) for c in v.comparisons] == [(2, (0, 1))]  # seed 7 of 500 steps is not a partner
    assert {(u.variant, u.seed, u.missing) for u in v.unpaired} == {("adaptive", 7, "baseline")}
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        compare(f, ["nope"])


def test_sample_metrics_exact_cases():
    x = np.random.default_rng(0).normal(size=(400, 2))
    assert sliced_w2(x, x) == 0 and precision(x, x) == 1 and recall(x, x) == 1
    far = x + 100
    assert precision(x, far) == 0 and recall(x, far) == 0
    assert sliced_w2(x, x + [3.0, 0.0]) == pytest.approx(3.0 * math.sqrt(np.mean(np.cos(np.pi * np.arange(64) / 64) ** 2)))
    half = np.concatenate([x[:200], x[:200] + 100])  # half the samples on the data, half far away
    assert precision(x, half) == pytest.approx(0.5, abs=0.02)


def test_shipped_floors_are_a_second_draw_of_the_data():
    real, fresh = make_dataset("line", 100_000, seed=42), make_dataset("line", 10_000, seed=43)
    for name, m in METRICS.items():
        if m.from_samples:
            assert floor("line", name) == pytest.approx(m.from_samples(real, fresh), abs=1e-12), name
    assert floor("line", "kl_divergence") == pytest.approx(0.015, abs=0.003)  # reference.md's floor
    assert floor("line", "eval_loss") is None


def test_seed_ranges_on_the_command_line():
    a = parser().parse_args(["reproduce", "--seeds", "0-2", "5"])
    assert a.seed == [[0, 1, 2], [5]]
    with pytest.raises(SystemExit):
        parser().parse_args(["reproduce", "--seeds", "3-1"])


def test_verdict_command_answers_in_json(cli, tmp_path):
    store = Store(tmp_path)
    small = dict(dataset="line", steps=60, n_points=1024, batch_size=128, n_samples=300)
    for variant in ("baseline", "adaptive"):
        for seed in (0, 1, 2):
            for _ in run_config(TrainConfig(variant=variant, seed=seed, **small), store, "cpu"):
                pass
    r = cli("verdict", "--json", "--metrics", "kl_divergence", "precision", store=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [(c["metric"], c["a"], c["b"], c["n"]) for c in out] == [("kl_divergence", "adaptive", "baseline", 3),
                                                                    ("precision", "adaptive", "baseline", 3)]
    runs = {(x.config.variant, x.config.seed): x.metrics for x in store.runs()}
    diffs = [runs["adaptive", s]["kl_divergence"] - runs["baseline", s]["kl_divergence"] for s in range(3)]
    assert out[0]["mean_diff"] == pytest.approx(np.mean(diffs))
    assert set(out[0]) >= {"dataset", "metric", "a", "b", "n", "mean_diff", "ci_low", "ci_high", "p", "p_holm", "verdict",
                           "family", "cs_low", "cs_high", "decision"}
    assert out[0]["family"] == "primary" and out[0]["decision"] in DECISIONS
    assert out[0]["ci_low"] <= out[0]["mean_diff"] <= out[0]["ci_high"]
    text = cli("verdict", store=tmp_path)
    assert text.returncode == 0 and "adaptive - baseline" in text.stdout
    missing = cli("verdict", store=tmp_path / "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no run store at")


def test_the_tables_ci_is_the_student_t_interval():
    """Results' "± 95% CI": t quantile (2.262 at 9 df, 12.706 at 1 df) times sd / sqrt(n); none from one seed."""
    from dualscale.paper import ci_half_width

    assert ci_half_width(1.0, 10) == pytest.approx(2.2621571627982053 / math.sqrt(10), rel=1e-12)
    assert ci_half_width(0.5, 2) == pytest.approx(12.706204736174707 * 0.5 / math.sqrt(2), rel=1e-12)
    assert math.isnan(ci_half_width(1.0, 1)) and math.isnan(ci_half_width(math.nan, 5))


def test_the_confirmatory_family_judges_fresh_dino_seeds_by_the_share_of_wins():
    """Only seeds 68 and up, only dino's KL at the reference settings; decided by the proportion
    interval at 0.05/3; every key the issue names in --json."""
    rng = np.random.default_rng(24)
    rows = []
    for s in range(90):
        base = 1.0 + rng.normal(0, 0.1)
        a_wins = s >= 68 and s % 10 != 0  # fresh seeds: adaptive lower in 20 of 22
        rows += [("dino", "baseline", s, {"kl_divergence": base}),
                 ("dino", "adaptive", s, {"kl_divergence": base - (0.05 if a_wins else -0.05)}),
                 ("circle", "baseline", s, {"kl_divergence": 0.35}), ("circle", "adaptive", s, {"kl_divergence": 0.34})]
    ref = pd.DataFrame([{"run_id": f"{d}-{v}-{s}", "dataset": d, "variant": v, "seed": s, "steps": 10000, **m}
                        for d, v, s, m in rows])
    confirm = [c for c in compare(ref, ["kl_divergence"]).comparisons if c.family == "confirmatory"]
    assert [(c.dataset, c.a, c.b, c.n, c.wins, c.seeds[0]) for c in confirm] == [("dino", "adaptive", "baseline", 22, 20, 68)]
    c = confirm[0]
    assert (c.pi_low, c.pi_high) == pytest.approx(proportion_sequence(20, 22, ALPHA / 3))
    assert c.pi_low > 0.5 and c.decision == "better in most seeds" and c.family_size == 3
    assert c.p_improve == pytest.approx(20 / 22)
    keys = json.loads(json.dumps(c.to_json()))
    assert {"family", "n", "wins", "p_improve", "pi_low", "pi_high", "decision"} <= set(keys)
    assert keys["family"] == "confirmatory"
    # not at the reference settings (steps 100): no confirmatory family at all
    assert not [c for c in compare(frame(rows), ["kl_divergence"]).comparisons if c.family == "confirmatory"]


def test_skewed_differences_put_the_gaussian_sequence_in_doubt_and_pairing_gain_is_measured():
    rng = np.random.default_rng(5)
    skewed = rng.lognormal(0, 1, 60) - 1.5       # skewness about +4
    symmetric = rng.normal(0, 1, 60)
    rows = []
    for s in range(60):
        shared = rng.normal(0, 5)                # a seed effect both variants share: pairing removes it
        rows += [("dino", "baseline", s, {"kl_divergence": 1 + shared, "eval_loss": 0.6}),
                 ("dino", "adaptive", s, {"kl_divergence": 1 + shared + 0.1 * skewed[s],
                                          "eval_loss": 0.6 + 0.001 * symmetric[s]})]
    v = {c.metric: c for c in compare(frame(rows), ["kl_divergence", "eval_loss"]).comparisons}
    kl, loss = v["kl_divergence"], v["eval_loss"]
    assert kl.skew > 1 and kl.gaussian_doubt and abs(loss.skew) < 1 and not loss.gaussian_doubt
    assert kl.pairing_gain > 0.99                # the shared seed effect is almost all of the variance
    assert loss.pairing_gain < 0.2               # nothing shared: pairing buys little
    from dualscale.sentences import doubt_text
    assert "skewed" in doubt_text(kl) and f"{kl.wins} of 60 seeds" in doubt_text(kl) and doubt_text(loss) == ""


def test_a_run_that_pairs_in_some_comparison_is_not_called_unpaired():
    """Issue 27: dino fixed and adaptive seeds without a baseline run still pair with each other."""
    rows = [("dino", v, s, {"kl_divergence": 1.0 + 0.01 * s}) for v in ("baseline", "fixed", "adaptive") for s in (0, 1)]
    rows += [("dino", v, s, {"kl_divergence": 0.9 + 0.01 * s}) for v in ("fixed", "adaptive") for s in (2, 3)]
    rows.append(("dino", "adaptive", 4, {"kl_divergence": 0.9}))  # no partner in any pair
    v = compare(frame(rows), ["kl_divergence"])
    assert [(u.variant, u.seed) for u in v.unpaired] == [("adaptive", 4)]
