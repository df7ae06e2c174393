"""The three denoisers of the paper, in full: this file is their whole definition.

A Branch is the reference MLPDenoiser (shared/reference.md). baseline = one branch; the dual-scale
models add a local branch on a learned "upscaling" of the point and mix the two:
    eps_hat = alpha(t) g + (1 - alpha(t)) l    (paper eq. for d(t); Table 2: alpha = 0.5)
Plain nn.Modules and autograd. models.py computes the same numbers faster (stacked branches,
timestep tables, a hand-written backward); tests/lib/test_model.py checks that they agree.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import VARIANTS, WEIGHT_NETS


class SinusoidalEmbedding(nn.Module):
    """E_s(v) = [sin(s v f), cos(s v f)], f_i = exp(-i ln(10000) / 63), i = 0..63: (B,) -> (B, 128)."""

    def __init__(self, scale: float, size: int = 128):
        super().__init__()
        half = size // 2
        self.scale = scale
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1)), persistent=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        arg = (self.scale * v)[:, None] * self.freqs  # (B, 64)
        return torch.cat([arg.sin(), arg.cos()], -1)  # (B, 128)


class Branch(nn.Module):
    """[E25(x), E25(y), E1(t)] -> Linear(384, 256) -> 3 x (h + Linear(ReLU h)) -> ReLU -> Linear(256, 2)."""

    def __init__(self, hidden: int = 256, n_blocks: int = 3):
        super().__init__()
        self.coord, self.time = SinusoidalEmbedding(25.0), SinusoidalEmbedding(1.0)
        self.inp = nn.Linear(3 * 128, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_blocks))
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([self.coord(x[:, 0]), self.coord(x[:, 1]), self.time(t)], -1))  # (B, 256)
        for block in self.blocks:
            h = h + block(torch.relu(h))  # (B, 256)
        return self.out(torch.relu(h))  # (B, 2)


class FixedAlpha(nn.Module):
    """alpha(t) = 0.5 for every t (paper Table 2)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full(t.shape, 0.5, device=t.device)  # (B,)


class AdaptiveAlpha(nn.Module):
    """alpha(t) from E1(t): sigmoid (the tables' net) or softmax over (global, local) (a later, deeper net)."""

    def __init__(self, kind: str = "sigmoid"):
        super().__init__()
        self.time = SinusoidalEmbedding(1.0)
        if kind == "sigmoid":  # 128 -> 256 -> 1
            self.net = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 1))
        elif kind == "softmax":  # 128 -> 256 -> 128 -> 2
            self.net = nn.Sequential(nn.Linear(128, 256), nn.LeakyReLU(0.2), nn.Linear(256, 128),
                                     nn.LeakyReLU(0.2), nn.Linear(128, 2))
        else:
            raise ValueError(f"unknown weight_net {kind!r}; choose one of: {', '.join(WEIGHT_NETS)}")

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        logits = self.net(self.time(t))  # (B, 1) or (B, 2)
        return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)[:, 0]  # (B,)


class Denoiser(nn.Module):
    """x_t (B, 2), t (B,) long -> eps_hat (B, 2). branches = [global] or [global, local]; mixer: t -> alpha(t)."""

    def __init__(self, variant: str = "adaptive", weight_net: str = "sigmoid"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
        self.variant, dual = variant, variant != "baseline"
        self.branches = nn.ModuleList(Branch() for _ in range(2 if dual else 1))
        self.upscale = nn.Linear(2, 4) if dual else None  # the local branch's learned "upscaling"
        self.mixer = AdaptiveAlpha(weight_net) if variant == "adaptive" else FixedAlpha() if dual else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = self.branches[0](x, t)  # (B, 2)
        if self.mixer is None:
            return g
        l = self.branches[1](self.upscale(x)[:, :2], t)  # (B, 2): the first 2 of the 4 upscaled outputs
        return l + self.mixer(t)[:, None] * (g - l)  # (B, 2) = alpha g + (1 - alpha) l


def build(config_or_variant, weight_net: str = "sigmoid") -> Denoiser:
    """A Denoiser from a TrainConfig (its variant and weight_net) or from a variant's name."""
    c = config_or_variant
    return Denoiser(c, weight_net) if isinstance(c, str) else Denoiser(c.variant, c.weight_net)


# ---- models.py's layout: its stacked (K, in, out) branches, for the tests and benchmarks --------
def fast_state_to_plain(state: dict) -> dict:
    """models.Denoiser's parameters by name (its state_dict, or its gradients) in this file's layout."""
    out = {}
    for k in range(state["branches.w_out"].shape[0]):
        s = {n.removeprefix("branches."): v[k] for n, v in state.items() if n.startswith("branches.")}  # branch k
        pre = f"branches.{k}."
        out[pre + "inp.weight"] = torch.cat([s["w_in_xy"], s["w_in_t"]]).T  # (256, 384): columns E(x), E(y), E(t)
        out[pre + "inp.bias"] = s["b_in"][0]
        for i in range(sum(n.startswith("w_res.") for n in s)):
            out[pre + f"blocks.{i}.weight"], out[pre + f"blocks.{i}.bias"] = s[f"w_res.{i}"].T, s[f"b_res.{i}"][0]
        out[pre + "out.weight"], out[pre + "out.bias"] = s["w_out"].T, s["b_out"][0]
    for name, value in state.items():
        if name.startswith("upscale."):
            out[name] = value
        elif name.startswith("weight_net."):
            out["mixer.net." + name.removeprefix("weight_net.")] = value
    return out


def plain_from_fast(fast: nn.Module) -> Denoiser:
    """A plain Denoiser holding a copy of a models.Denoiser's weights, on the same device."""
    net = getattr(fast, "weight_net", None)
    plain = Denoiser(fast.variant, "sigmoid" if net is None or net[-1].out_features == 1 else "softmax")
    plain.load_state_dict(fast_state_to_plain(fast.state_dict()))
    return plain.to(fast.branches.w_out.device)
