"""Exact pieces of the math: schedule, embedding, models, EMA, lr, data constants, KL estimator."""
import math

import numpy as np
import pytest
import torch

from dualscale import TrainConfig, kl_divergence, make_dataset
from dualscale.data import DATASETS, PAPER_DATASETS, datasaurus
from dualscale.diffusion import NoiseSchedule
from dualscale.models import build_model, count_parameters, sinusoidal, sum_by_index
from dualscale.train import Ema, clip_rows_, cosine_lr, flatten_, loss_fn


# ---- schedule (Ho et al. 2020) ----------------------------------------------------------------
def test_linear_schedule_values():
    s = NoiseSchedule(100)
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-6)
    assert s.alphas_cumprod[99].item() == pytest.approx(0.3635632395744324, rel=1e-6)
    assert s.variance[50].item() == pytest.approx(0.00980342272669077, rel=1e-6)
    assert s.variance[0].item() == pytest.approx(1e-20)  # 0, clipped
    assert s.alphas_cumprod_prev[0].item() == 1.0
    assert s.betas.dtype == torch.float32


def test_quadratic_schedule_values():
    q = NoiseSchedule(100, schedule="quadratic")
    assert q.betas[50].item() == pytest.approx(0.005833052564412355, rel=1e-6)
    assert q.alphas_cumprod[99].item() == pytest.approx(0.4845898151397705, rel=1e-6)
    with pytest.raises(ValueError, match="linear, quadratic, cosine, zero_snr"):
        NoiseSchedule(100, schedule="sigmoid")


def test_reverse_mean_matches_eps_form():
    """mu from x0_hat (eq. 7) equals 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1-abar_t) eps) (eq. 11)."""
    s = NoiseSchedule(100)
    g = torch.Generator().manual_seed(0)
    xt, eps = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    for t in (1, 37, 99):
        mean = s.step(eps, t, xt, None)
        beta, abar = s.betas[t], s.alphas_cumprod[t]
        eq11 = (xt - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt()
        torch.testing.assert_close(mean, eq11, rtol=1e-4, atol=1e-5)


def test_add_noise_then_perfect_eps_recovers_x0():
    s = NoiseSchedule(100)
    x0 = torch.randn(32, 2)
    eps = torch.randn(32, 2)
    t = torch.arange(32) * 3
    torch.testing.assert_close(s.predict_x0(s.add_noise(x0, eps, t), eps, t), x0, rtol=1e-4, atol=1e-4)


def test_vlb_kl_is_zero_for_perfect_eps_and_at_t0():
    s = NoiseSchedule(100)
    x0, eps = torch.randn(8, 2), torch.randn(8, 2)
    t = torch.tensor([0, 1, 5, 10, 50, 90, 99, 0])
    xt = s.add_noise(x0, eps, t)
    assert torch.allclose(s.vlb_kl(x0, xt, eps, t), torch.zeros(8), atol=1e-6)
    kl = s.vlb_kl(x0, xt, eps + 0.1, t)
    assert kl[0] == 0 and kl[-1] == 0 and (kl[1:-1] > 0).all()


# ---- networks -------------------------------------------------------------------------------
def test_sinusoidal_embedding():
    e = sinusoidal(torch.tensor([0.0, 2.0]), 1.0)
    assert e.shape == (2, 128)
    assert torch.equal(e[0], torch.cat([torch.zeros(64), torch.ones(64)]))
    # f_0 = 1, f_63 = 1e-4
    assert e[1, 0].item() == pytest.approx(math.sin(2.0), abs=1e-6)
    assert e[1, 63].item() == pytest.approx(math.sin(2e-4), rel=1e-4)
    assert sinusoidal(torch.tensor([0.1]), 25.0)[0, 0].item() == pytest.approx(math.sin(2.5), abs=1e-6)


@pytest.mark.parametrize("variant,weight_net,count", [
    ("baseline", "sigmoid", 296_450), ("fixed", "sigmoid", 592_912),
    ("adaptive", "sigmoid", 626_193), ("adaptive", "softmax", 659_090)])
def test_parameter_counts(variant, weight_net, count):
    assert count_parameters(build_model(TrainConfig(variant=variant, weight_net=weight_net))) == count


def test_alpha_tables():
    torch.manual_seed(0)
    assert build_model(TrainConfig(variant="baseline")).alpha_table() is None
    assert torch.equal(build_model(TrainConfig(variant="fixed")).alpha_table(), torch.full((100,), 0.5))
    for net in ("sigmoid", "softmax"):
        a = build_model(TrainConfig(variant="adaptive", weight_net=net)).alpha_table()
        assert a.shape == (100,) and ((a > 0) & (a < 1)).all() and a.std() > 0


def test_dual_model_mixes_its_branches():
    """d = alpha g + (1 - alpha) l, with the local branch on the Linear(2, 4) 'upscaled' input."""
    torch.manual_seed(0)
    m = build_model(TrainConfig(variant="adaptive")).eval()
    x, t = torch.randn(16, 2), torch.randint(0, 100, (16,))
    with torch.no_grad():
        local = m.upscale(x)[:, :2]
        g, l = m.branches(torch.stack([x, local]), m.branches.t_table(m.t_embed), t)
        a = m.alpha_table()[t, None]
        torch.testing.assert_close(m(x, t), a * g + (1 - a) * l)
        # one int t for a whole batch equals a batch of that t (sampling uses the first form)
        torch.testing.assert_close(m(x, 7), m(x, torch.full((16,), 7)))


def test_branch_matches_plain_mlp():
    """The stacked branch is the reference MLP: Linear(384,256) -> 3 x [h + Linear(ReLU h)] -> ReLU -> Linear."""
    torch.manual_seed(0)
    m = build_model(TrainConfig(variant="baseline")).eval()
    b = m.branches
    x, t = torch.randn(8, 2), torch.randint(0, 100, (8,))
    inp = torch.cat([sinusoidal(x[:, 0], 25.0), sinusoidal(x[:, 1], 25.0), sinusoidal(t.float(), 1.0)], 1)
    w_in = torch.cat([b.w_in_xy[0], b.w_in_t[0]])  # (384, 256)
    h = inp @ w_in + b.b_in[0]
    for w, bias in zip(b.w_res, b.b_res):
        h = h + torch.relu(h) @ w[0] + bias[0]
    out = torch.relu(h) @ b.w_out[0] + b.b_out[0]
    torch.testing.assert_close(m(x, t), out, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the in-place inference path computes the same
        torch.testing.assert_close(m(x, t), out, rtol=1e-4, atol=1e-5)


# ---- training pieces ------------------------------------------------------------------------
# On a machine with a GPU the hand-written step is checked there too (its sums take another path).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant, weight_net", [("baseline", "sigmoid"), ("fixed", "sigmoid"),
                                                 ("adaptive", "sigmoid"), ("adaptive", "softmax")])
def test_manual_gradients_match_autograd(variant, weight_net, device):
    """The models' hand-written backward gives autograd's loss and gradients for every parameter."""
    torch.manual_seed(3)
    model = build_model(TrainConfig(variant=variant, weight_net=weight_net))
    with torch.no_grad():  # move off the init so that no gradient is trivially zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.to(device)
    schedule = NoiseSchedule(100).to(device)
    g = torch.Generator().manual_seed(1)
    x0, t, eps = torch.randn(200, 2, generator=g), torch.randint(0, 100, (200,), generator=g), torch.randn(200, 2, generator=g)
    x0, t, eps = x0.to(device), t.to(device), eps.to(device)
    loss = loss_fn(model, schedule, x0, t, eps, 0.0)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    flat = flatten_(model)  # grads become views of one zeroed buffer, which mse_and_grads overwrites
    assert flat.grad.abs().sum() == 0
    manual = model.mse_and_grads(schedule.add_noise(x0, eps, t), t, eps)
    assert manual.item() == pytest.approx(loss.item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    if variant != "baseline":  # the upscale rows the local branch ignores get exactly zero
        assert model.upscale.weight.grad[2:].abs().sum() == 0 and model.upscale.weight.grad[:2].abs().sum() > 0


def test_sum_by_index_both_ways():
    """index_add_ (CPU) and the one-hot matmul (GPUs: deterministic) give the same sums."""
    g = torch.Generator().manual_seed(0)
    index = torch.tensor([3, 0, 3, 3, 1])
    rows = torch.randn(2, 5, 4, generator=g)
    expected = torch.zeros(2, 6, 4)
    for j, i in enumerate(index.tolist()):
        expected[:, i] += rows[:, j]
    for one_hot in (False, True):
        torch.testing.assert_close(sum_by_index(rows, index, 6, one_hot=one_hot), expected)
        torch.testing.assert_close(sum_by_index(rows[0, :, 0], index, 6, one_hot=one_hot), expected[0, :, 0])
    assert sum_by_index(rows, index, 6)[:, [2, 4, 5]].abs().sum() == 0


def test_flatten_shares_storage_with_the_module():
    model = build_model(TrainConfig(variant="fixed"))
    before = [p.detach().clone() for p in model.parameters()]
    flat = flatten_(model)
    assert flat.numel() == count_parameters(model) == 592_912
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)  # same values, now views
    with torch.no_grad():
        flat.add_(1.0)
    assert torch.equal(model.branches.w_out, before[3] + 1.0)


@pytest.mark.parametrize("scale", [1e-4, 6e-4, 1.0])  # norms 0.08, 0.47 (not clipped) and 791
def test_clip_rows_is_clip_grad_norm_bit_for_bit_in_every_row(scale):
    g = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(626_193, generator=g)) for _ in range(3)]
    for i, p in enumerate(params):
        p.grad = torch.randn(626_193, generator=g) * scale * (1, 3, 1e-3)[i]  # rows clipped or not on their own
    rows = torch.stack([p.grad for p in params])
    totals = [torch.nn.utils.clip_grad_norm_([p], 0.5, foreach=True) for p in params]
    assert torch.equal(clip_rows_(rows, 0.5)[:, 0], torch.stack(totals))
    for row, p in zip(rows, params):
        assert torch.equal(row, p.grad)
    assert (totals[0] > 0.5) == (scale == 1.0)


def test_tables_passed_in_give_the_same_output():
    torch.manual_seed(0)
    for variant in ("baseline", "adaptive"):
        m = build_model(TrainConfig(variant=variant))
        x, t = torch.randn(64, 2), torch.randint(0, 100, (64,))
        with torch.no_grad():
            tables = m.tables()
            assert torch.equal(m(x, t, tables), m(x, t))
            assert torch.equal(m(x, 7, tables), m(x, 7))


def test_ema_decay_schedule():
    assert Ema.decay(110) == pytest.approx(0.798, abs=5e-4)
    assert Ema.decay(200) == pytest.approx(0.954, abs=5e-4)
    assert Ema.decay(1000) == pytest.approx(0.989, abs=5e-4)
    assert Ema.decay(2920) < 0.995 and Ema.decay(2930) == 0.995  # capped from the 2930th step on


def test_ema_warmup_copies_then_averages():
    torch.manual_seed(0)
    online, shadow = build_model(TrainConfig(variant="baseline")), build_model(TrainConfig(variant="baseline"))
    ema = Ema(online.parameters(), shadow.parameters())
    p, q = next(online.parameters()), next(shadow.parameters())
    ema.update(110)
    assert torch.equal(p, q)  # s <= 110: a copy
    before = q.detach().clone()
    with torch.no_grad():
        p.add_(1.0)
    ema.update(115)  # not a multiple of 10: nothing
    assert torch.equal(q, before)
    ema.update(200)
    torch.testing.assert_close(q, before + (1 - Ema.decay(200)) * 1.0)


def test_cosine_lr_matches_torch_scheduler():
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50)
    for step in range(50):
        assert cosine_lr(3e-4, step, 50) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()


# ---- data -----------------------------------------------------------------------------------
def test_dataset_constants_seed_42():
    """First points of each paper dataset with the reference's seed 42 (reference.md)."""
    expected = {
        "circle": [[1.3827052116394043, -2.745598077774048], [-0.05046381801366806, 0.017671963199973106]],
        "dino": [[-2.331653118133545, 0.7719997763633728], [0.5404316782951355, -2.406684398651123]],
        "line": [[1.0958242416381836, -3.503495216369629], [-0.2444862425327301, -0.3339036703109741]],
        "moons": [[-0.41866374015808105, 1.0729432106018066], [1.5091477632522583, -1.5212675333023071]],
    }
    for name, rows in expected.items():
        d = make_dataset(name, 1000)
        assert d.dtype == np.float32 and d.shape == (1000, 2)
        np.testing.assert_allclose(d[:2], rows, rtol=1e-6)


def test_dataset_shapes():
    line = make_dataset("line", 5000)
    assert (np.abs(line[:, 0]) <= 2).all() and (np.abs(line[:, 1]) <= 4).all()
    circle = make_dataset("circle", 5000)
    r = np.linalg.norm(circle, axis=1)
    on_ring = r > 1
    # quantised directions on the unit circle (the (0, 0) start stays at the origin), jitter <= 0.03, times 3
    assert (np.abs(r[on_ring] - 3) <= 0.09 + 1e-5).all() and (r[~on_ring] <= 0.09 + 1e-5).all()
    assert len(np.unique(np.round(np.arctan2(circle[on_ring, 1], circle[on_ring, 0]), 1))) < 60
    assert datasaurus("dino").shape == (142, 2)
    assert sum(datasaurus(s).shape[0] for s in DATASETS if s not in ("circle", "line", "moons")) == 13 * 142


def test_every_dataset_builds_and_seeds_matter():
    for name in DATASETS:
        d = make_dataset(name, 200)
        assert d.shape == (200, 2) and np.isfinite(d).all()
    assert not np.array_equal(make_dataset("dino", 100, seed=1), make_dataset("dino", 100))
    assert set(PAPER_DATASETS) == {"circle", "dino", "line", "moons"}


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="choose one of: circle, dino, line, moons"):
        make_dataset("dinosaur")
    with pytest.raises(ValueError, match="positive"):
        make_dataset("dino", 0)


# ---- KL estimator ---------------------------------------------------------------------------
def brute_force_kl(real, samples, k):
    """NPEET kldiv written out with dense Chebyshev distance matrices (independent of the KD-tree)."""
    d_rr = np.abs(real[:, None, :] - real[None, :, :]).max(-1)
    np.fill_diagonal(d_rr, np.inf)
    d_rs = np.abs(real[:, None, :] - samples[None, :, :]).max(-1)
    rho = np.sort(d_rr, 1)[:, k - 1]
    nu = np.sort(d_rs, 1)[:, k - 1]
    n, m, dim = len(real), len(samples), real.shape[1]
    return (math.log(m) - math.log(n - 1) + dim * np.mean(np.log(nu) - np.log(rho))) / math.log(2)


def test_kl_exact_on_seeded_inputs():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 2)), rng.normal(size=(300, 2)) + 0.5
    assert kl_divergence(a, b) == pytest.approx(0.4862295292684642, rel=1e-12)
    assert kl_divergence(a, b) == pytest.approx(brute_force_kl(a, b, 5), rel=1e-12)
    assert kl_divergence(a, b, k=1) == pytest.approx(brute_force_kl(a, b, 1), rel=1e-12)


def test_kl_gaussian_closed_form():
    """KL(N(0, I) || N(mu, I)) = |mu|^2 / 2 nats; here mu = (1, 0): 0.5 / ln 2 = 0.721 bits."""
    rng = np.random.default_rng(1)
    est = kl_divergence(rng.normal(size=(40_000, 2)), rng.normal(size=(40_000, 2)) + [1.0, 0.0])
    assert est == pytest.approx(0.5 / math.log(2), abs=0.04)
    same = kl_divergence(rng.normal(size=(20_000, 2)), rng.normal(size=(20_000, 2)))
    assert abs(same) < 0.03


def test_a_data_cloud_scores_exactly_as_the_plain_points_and_once_per_dataset():
    """DataCloud keeps the data's side of the metrics (rho, sorted projections, the equal-size
    subset and its balls, start_mismatch); every value equals the plain array's, bit for bit."""
    from dualscale.metrics import DataCloud, run_scores

    real = make_dataset("dino", 20_000)
    data = DataCloud(real)
    rng = np.random.default_rng(5)
    for spread in (0.02, 0.3):
        samples = real[rng.choice(len(real), 3000)] + spread * rng.normal(size=(3000, 2))
        oracle = samples[::-1] + 0.01
        assert run_scores(data, samples, oracle, 0.364) == run_scores(real, samples, oracle, 0.364)
    assert {k[0] for k in data._memo} == {"rho", "projections", "equal_size", "balls", "start_mismatch"}


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 100_000])
def test_inverted_cdf_index_reads_the_order_statistic_numpy_quantile_reads(n):
    from dualscale.metrics import inverted_cdf_index

    x = np.random.default_rng(n).normal(size=n)
    for m in (1, 3, 10, 500, 10_000):
        q = (np.arange(m) + 0.5) / m
        np.testing.assert_array_equal(np.sort(x)[inverted_cdf_index(n, q)], np.quantile(x, q, method="inverted_cdf"))
    q = np.array([0.0, 1e-12, 0.5, 1 - 1e-12, 1.0])
    np.testing.assert_array_equal(np.sort(x)[inverted_cdf_index(n, q)], np.quantile(x, q, method="inverted_cdf"))


def test_kl_bad_input():
    a = np.zeros((10, 2)) + np.arange(10)[:, None]
    with pytest.raises(ValueError, match="k must be"):
        kl_divergence(a, a[:3], k=5)
    with pytest.raises(ValueError, match="NaN"):
        kl_divergence(a, np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="dimension"):
        kl_divergence(a, np.zeros((10, 3)))
