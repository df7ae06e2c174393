"""The readable model (dualscale/model.py) against the fast one (dualscale/models.py): same parameter
counts, same outputs, same alpha(t), and autograd's gradients equal to the hand-written backward."""
import pytest
import torch

from dualscale import TrainConfig
from dualscale import model as plain_model
from dualscale import models as fast_models
from dualscale.diffusion import NoiseSchedule
from dualscale.model import Branch, Denoiser, SinusoidalEmbedding, build, fast_state_to_plain, plain_from_fast
from dualscale.train import flatten_, loss_fn

CASES = [("baseline", "sigmoid"), ("fixed", "sigmoid"), ("adaptive", "sigmoid"), ("adaptive", "softmax")]
COUNTS = {("baseline", "sigmoid"): 296_450, ("fixed", "sigmoid"): 592_912,
          ("adaptive", "sigmoid"): 626_193, ("adaptive", "softmax"): 659_090}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def fast_and_plain(variant: str, weight_net: str, seed: int = 3, device: str = "cpu"):
    """A fast model moved off its init (so that no gradient is trivially zero) and its plain copy."""
    torch.manual_seed(seed)
    fast = fast_models.build_model(TrainConfig(variant=variant, weight_net=weight_net))
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fast.to(device)
    return fast, plain_from_fast(fast)


def batch(n: int = 200, seed: int = 1, device: str = "cpu"):
    """x0, t and eps; n > T, so several samples share a timestep (the fast path sums those)."""
    g = torch.Generator().manual_seed(seed)
    x0, t = 2 * torch.randn(n, 2, generator=g), torch.randint(0, 100, (n,), generator=g)
    return x0.to(device), t.to(device), torch.randn(n, 2, generator=g).to(device)


@pytest.mark.parametrize("variant, weight_net", CASES)
def test_parameter_counts_equal_the_fast_models(variant, weight_net):
    plain = build(TrainConfig(variant=variant, weight_net=weight_net))
    assert count(plain) == COUNTS[variant, weight_net]
    assert count(plain) == fast_models.count_parameters(fast_models.Denoiser(variant, 100, weight_net))
    assert count(Branch()) == 296_450  # the reference MLPDenoiser


def test_composition():
    """baseline = one branch; fixed = two + a constant 0.5; adaptive = two + the alpha(t) net."""
    assert len(build("baseline").branches) == 1 and build("baseline").mixer is None
    assert len(build("fixed").branches) == 2 and isinstance(build("fixed").mixer, plain_model.FixedAlpha)
    assert isinstance(build("adaptive").mixer, plain_model.AdaptiveAlpha)
    assert build("adaptive", "softmax").mixer.net[-1].out_features == 2
    with pytest.raises(ValueError, match="choose one of: baseline, fixed, adaptive"):
        build("triple")
    with pytest.raises(ValueError, match="choose one of: sigmoid, softmax"):
        build("adaptive", "tanh")


def test_embedding_is_the_fast_paths():
    v = torch.linspace(-4, 4, 101)
    for scale in (1.0, 25.0):
        torch.testing.assert_close(SinusoidalEmbedding(scale)(v), fast_models.sinusoidal(v, scale), rtol=0, atol=1e-6)
    assert SinusoidalEmbedding(1.0)(torch.arange(100)).shape == (100, 128)  # integer timesteps work as they are


@pytest.mark.parametrize("variant, weight_net", CASES)
def test_outputs_equal_the_fast_models(variant, weight_net):
    fast, plain = fast_and_plain(variant, weight_net)
    x, t, _ = batch()
    out = plain(x, t)
    assert out.shape == (200, 2)
    torch.testing.assert_close(out, fast(x, t), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the fast model's in-place inference path
        torch.testing.assert_close(plain(x, t), fast(x, t), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(plain(x, torch.full((200,), 7)), fast(x, 7), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant, weight_net", CASES[1:])
def test_alpha_curves_equal_the_fast_models(variant, weight_net):
    fast, plain = fast_and_plain(variant, weight_net)
    with torch.no_grad():
        alpha = plain.mixer(torch.arange(100))  # (T,)
        torch.testing.assert_close(alpha, fast.alpha_table(), rtol=1e-6, atol=1e-6)
    assert (alpha == 0.5).all() if variant == "fixed" else alpha.std() > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant, weight_net", CASES)
def test_autograd_gradients_equal_the_hand_written_backward(variant, weight_net, device):
    """The project's loss_fn on the plain model, backward by autograd, against mse_and_grads."""
    fast, plain = fast_and_plain(variant, weight_net, device=device)
    schedule = NoiseSchedule(100).to(device)
    x0, t, eps = batch(device=device)
    loss = loss_fn(plain, schedule, x0, t, eps, 0.0)
    loss.backward()
    flatten_(fast)  # the .grad the hand-written backward writes into
    fast_loss = fast.mse_and_grads(schedule.add_noise(x0, eps, t), t, eps)
    assert loss.item() == pytest.approx(fast_loss.item(), rel=1e-5)
    expected = fast_state_to_plain({n: p.grad for n, p in fast.named_parameters()})
    assert expected.keys() == dict(plain.named_parameters()).keys()
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
        assert p.grad.norm() > 0 or name.startswith("upscale"), name
    if variant != "baseline":  # the local branch reads only the first 2 of the upscaling's 4 outputs
        assert plain.upscale.weight.grad[2:].abs().sum() == 0 and plain.upscale.weight.grad[:2].abs().sum() > 0


def test_fast_state_loads_strictly_and_round_trips_the_weights():
    """A stored (fast-layout) checkpoint loads into the plain model with every parameter accounted for."""
    fast, plain = fast_and_plain("adaptive", "softmax")
    state = fast_state_to_plain(fast.state_dict())
    assert set(state) == set(plain.state_dict())
    assert torch.equal(plain.branches[1].inp.weight[:, 256:], fast.branches.w_in_t[1].T)
    assert torch.equal(plain.branches[0].blocks[2].bias, fast.branches.b_res[2][0, 0])
    fresh = Denoiser("adaptive", "softmax")
    fresh.load_state_dict(state)  # strict: no missing or unexpected keys
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), plain.parameters()))
