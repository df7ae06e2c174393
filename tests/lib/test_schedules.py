"""Schedules that reach pure noise (issue 13): pinned values, v-prediction, the start diagnostics."""
import math

import pytest
import torch

from dualscale import TrainConfig, make_dataset
from dualscale.diffusion import NoiseSchedule
from dualscale.evaluate import oracle_samples
from dualscale.metrics import METRICS, kl_divergence, start_mismatch
from dualscale.store import Store
from support import ROOT


def test_linear_beta_end_reaches_the_issues_values():
    assert NoiseSchedule(100, beta_end=0.05).alphas_cumprod[-1].item() == pytest.approx(0.078234, rel=1e-4)
    assert NoiseSchedule(100, beta_end=0.1).alphas_cumprod[-1].item() == pytest.approx(0.0056188, rel=1e-4)


def test_cosine_schedule_matches_nichol_dhariwal_eq17():
    s = NoiseSchedule(100, schedule="cosine")
    f = [math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(101)]
    for t in (0, 10, 49, 90):  # before the 0.999 clip, abar at index t is f(t + 1) / f(0)
        assert s.alphas_cumprod[t].item() == pytest.approx(f[t + 1] / f[0], rel=1e-5)
    assert s.alphas_cumprod[49].item() == pytest.approx(0.4938436, rel=1e-5)
    assert s.betas[-1].item() == pytest.approx(0.999)  # the clip (f(T) = 0 would give beta_T = 1)
    assert s.alphas_cumprod[-1].item() == pytest.approx(2.42857e-7, rel=1e-4)


def test_zero_terminal_snr_rescale():
    s = NoiseSchedule(100, schedule="zero_snr", prediction="v")
    abar = s.alphas_cumprod.double()
    assert abar[-1].item() == 0.0  # SNR_T = abar_T / (1 - abar_T) = 0
    assert s.betas[-1].item() == 1.0
    assert abar[0].item() == pytest.approx(1 - 1e-4, rel=1e-7)  # sqrt(abar_1) keeps its value (Lin et al. Alg. 1)
    assert (abar[1:] < abar[:-1]).all()
    assert abar[49].item() == pytest.approx(0.4925093, rel=1e-5)


def test_zero_snr_needs_v_prediction():
    with pytest.raises(ValueError, match="use prediction v"):
        NoiseSchedule(100, schedule="zero_snr")
    with pytest.raises(ValueError, match="use prediction v"):
        TrainConfig(beta_schedule="zero_snr").validate()
    with pytest.raises(ValueError, match="beta_end applies to"):
        TrainConfig(beta_schedule="cosine", beta_end=0.1).validate()


@pytest.mark.parametrize("schedule,prediction", [("linear", "v"), ("cosine", "v"), ("zero_snr", "v"), ("cosine", "eps")])
def test_the_target_recovers_x0_at_every_t(schedule, prediction):
    s = NoiseSchedule(100, schedule=schedule, prediction=prediction)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)
    t = torch.arange(100)
    x0_hat = s.predict_x0(s.add_noise(x0, eps, t), s.target(x0, eps, t), t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-3, atol=2e-3)


def test_v_is_sqrt_abar_eps_minus_sqrt_one_minus_abar_x0():
    s = NoiseSchedule(100, prediction="v")
    x0, eps, t = torch.ones(1, 2), torch.full((1, 2), 2.0), torch.tensor([99])
    a = 0.3635632395744324
    torch.testing.assert_close(s.target(x0, eps, t), torch.full((1, 2), math.sqrt(a) * 2 - math.sqrt(1 - a)))


def test_new_settings_keep_the_old_run_ids():
    """Settings added later stay out of the id while at their default: shipped runs keep their folders."""
    assert TrainConfig(dataset="circle", variant="baseline", seed=9).run_id == "circle-baseline-s9-5c777b0c7278"
    assert TrainConfig(prediction="v").run_id != TrainConfig().run_id
    assert TrainConfig(beta_end=0.1).run_id != TrainConfig().run_id


def test_start_mismatch_is_large_for_the_reference_schedule_and_floor_at_zero_snr():
    real = make_dataset("line", 100_000)
    assert start_mismatch(real, 0.3635632) > 0.3
    assert abs(start_mismatch(real, 0.0)) < 0.05  # both clouds are N(0, I): the estimator's floor
    assert METRICS["kl_oracle_start"].unit == "bits" and METRICS["kl_oracle_start"].lower_is_better


def test_oracle_start_removes_the_line_baseline_mismatch():
    """The issue's check on the shipped seed-0 line baseline (its own weights, our own draws):
    from q(x_T) its KL falls below 0.05 bits, while from N(0, I) it is above 0.1."""
    run = Store(ROOT / "checkpoints").find(TrainConfig(dataset="line", variant="baseline"))
    assert run is not None and run.metrics["kl_divergence"] > 0.1
    from dualscale.train import make_schedule

    schedule = make_schedule(run.config)
    data = torch.from_numpy(make_dataset("line", run.config.n_points))
    torch.set_num_threads(2)
    oracle = oracle_samples(run.load_model(), schedule, data, 10_000, torch.Generator().manual_seed(12345))
    assert kl_divergence(data.numpy(), oracle) < 0.05


def test_cli_trains_the_new_schedules_end_to_end(cli, tmp_path):
    small = ["--dataset", "moons", "--variant", "adaptive", "--steps", "60", "--n-points", "1000",
             "--batch-size", "128", "--n-samples", "300"]
    for extra in (["--beta-schedule", "zero_snr", "--prediction", "v"], ["--beta-schedule", "cosine"]):
        r = cli("train", *small, *extra, store=tmp_path)
        assert r.returncode == 0, r.stderr
        out = __import__("json").loads(r.stdout)
        assert {"kl_oracle_start", "start_mismatch"} <= set(out)
    runs = Store(tmp_path).runs()
    assert {(r.config.beta_schedule, r.config.prediction) for r in runs} == {("zero_snr", "v"), ("cosine", "eps")}
    r = cli("train", *small, "--beta-schedule", "zero_snr", store=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == ("error: beta_schedule zero_snr reaches SNR 0, where eps is "
                                                      "undefined; use prediction v")
