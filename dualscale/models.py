"""The three denoisers, built from one skeleton: K residual-MLP branches + a mixer, and beside
each forward its hand-written backward.

baseline = 1 branch; fixed = 2 branches mixed 0.5/0.5; adaptive = 2 branches mixed by alpha(t).
Both branches of a dual model have the same shapes, so they are stored stacked, (K, in, out), and
run as one batched matmul. Everything that depends only on t (the timestep embedding's share of
the first layer, alpha(t)) is computed once per step for all T timesteps and then gathered,
instead of once per sample: same math, a fraction of the work.

The backward (Denoiser.mse_and_grads, Branches.backward, _alpha_backward): on a CPU, autograd's
graph adds ~60 small ops to a step whose matmuls take ~6 ms; the hand-written one does the same
math with the matmuls and a handful of elementwise kernels (an in-process A/B: 13% off a 2-thread
adaptive step, 4% off a baseline step). It skips the global branch's input gradient (its input
needs none), sums the timestep table's gradient per timestep, and writes each gradient into the
parameter's .grad (which train.flatten_ makes views of one flat tensor).
`tests/lib/test_math.py` checks every gradient against autograd for every variant.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import WEIGHT_NETS, TrainConfig

EMBED_DIM = 128     # per embedded scalar: 64 frequencies x (sin, cos)
HIDDEN = 256
N_BLOCKS = 3
COORD_SCALE = 25.0  # E_25 for the coordinates, E_1 for the timestep (reference.md)
FIXED_ALPHA = 0.5   # the fixed variant's weight on the global branch (paper Table 2)
N_UPSCALED = 2      # the local branch sees the first 2 of the Linear(2, 4) "upscaling"'s outputs


def frequencies(device=None) -> torch.Tensor:
    """f_i = exp(-i ln(10000) / 63), i = 0..63."""
    half = EMBED_DIM // 2
    return torch.exp(-math.log(10000.0) * torch.arange(half, device=device) / (half - 1))


def sinusoidal(v: torch.Tensor, scale: float, freqs: torch.Tensor | None = None) -> torch.Tensor:
    """E_s(v) = [sin(s v f), cos(s v f)]: (...,) -> (..., 128)."""
    freqs = frequencies(v.device) if freqs is None else freqs
    arg = (scale * v)[..., None] * freqs  # (..., 64)
    return torch.cat([arg.sin(), arg.cos()], -1)


def _uniform(shape, fan_in: int) -> nn.Parameter:
    """nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def relu_grad_(grad: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """grad *= (activation > 0), in place: the relu's backward without a new buffer."""
    return torch.ops.aten.threshold_backward.grad_input(grad, activation, 0.0, grad_input=grad)


def sum_by_index(values: torch.Tensor, index: torch.Tensor, n: int, one_hot: bool | None = None) -> torch.Tensor:
    """Sum the rows of `values` that share an index: (..., B, D) or (B,) -> (..., n, D) or (n,).

    On a CPU, index_add_ (sequential, so deterministic). Elsewhere index_add_ adds with atomics
    in no fixed order, which would break "same seed, same device, same numbers"; there it is
    a one-hot matmul instead. `one_hot` forces either way (for tests).
    """
    one_hot = values.device.type != "cpu" if one_hot is None else one_hot
    if one_hot:
        return torch.nn.functional.one_hot(index, n).to(values.dtype).T @ values  # (n, B) @ (..., B, D)
    dim = max(values.dim() - 2, 0)  # the B axis
    shape = (*values.shape[:dim], n, *values.shape[dim + 1:])
    return torch.zeros(shape, dtype=values.dtype, device=values.device).index_add_(dim, index, values)


class Branches(nn.Module):
    """K copies of the reference MLPDenoiser, stacked: [E25(x), E25(y), E1(t)] -> 256 -> 3 res -> 2."""

    def __init__(self, k: int):
        super().__init__()
        d_in = 3 * EMBED_DIM
        # The first layer's weight is split: rows for the coordinates, rows for the timestep.
        self.w_in_xy = _uniform((k, 2 * EMBED_DIM, HIDDEN), d_in)
        self.w_in_t = _uniform((k, EMBED_DIM, HIDDEN), d_in)
        self.b_in = _uniform((k, 1, HIDDEN), d_in)
        self.w_res = nn.ParameterList([_uniform((k, HIDDEN, HIDDEN), HIDDEN) for _ in range(N_BLOCKS)])
        self.b_res = nn.ParameterList([_uniform((k, 1, HIDDEN), HIDDEN) for _ in range(N_BLOCKS)])
        self.w_out = _uniform((k, HIDDEN, 2), HIDDEN)
        self.b_out = _uniform((k, 1, 2), HIDDEN)
        self.register_buffer("freqs", frequencies(), persistent=False)

    def t_table(self, t_embed: torch.Tensor) -> torch.Tensor:
        """The timestep's share of the first layer for every t: (T, 128) -> (K, T, 256), bias included."""
        return torch.baddbmm(self.b_in, t_embed.expand(self.w_in_t.shape[0], -1, -1), self.w_in_t)

    def forward(self, xy: torch.Tensor, t_table: torch.Tensor, t) -> torch.Tensor:
        """xy (K, B, 2) coordinates per branch; t_table (K, T, 256) from t_table(); t (B,) long or int -> (K, B, 2)."""
        k, b, _ = xy.shape
        emb = sinusoidal(xy, COORD_SCALE, self.freqs).reshape(k, b, 2 * EMBED_DIM)  # (K, B, 256) = [E(x), E(y)]
        t_part = t_table[:, t:t + 1] if isinstance(t, int) else t_table[:, t]  # (K, 1 or B, 256)
        if torch.is_grad_enabled() or torch.is_autocast_enabled(xy.device.type):  # autocast: no in-place mixing of dtypes
            h = torch.bmm(emb, self.w_in_xy) + t_part
            for w, bias in zip(self.w_res, self.b_res):
                h = torch.baddbmm(h + bias, torch.relu(h), w)  # h + b + relu(h) W: (K, B, 256)
        else:  # no autograd: accumulate in place, no temporaries the size of h
            h = torch.bmm(emb, self.w_in_xy).add_(t_part)
            for w, bias in zip(self.w_res, self.b_res):
                h = h.baddbmm_(torch.relu(h), w).add_(bias)
        return self.output(torch.relu(h))

    def output(self, r: torch.Tensor) -> torch.Tensor:
        """The last layer, r W_out + b_out: (K, B, 256) -> (K, B, 2), a transposed view.

        Computed as (W_out^T r^T + b_out^T)^T: MKL multiplies (2, 256) @ (256, B) 4-7x faster than
        (B, 256) @ (256, 2) on a CPU (measured 23 vs 176 us at B = 256, one thread).
        """
        w_t = self.w_out.transpose(1, 2).contiguous()  # (K, 2, 256), 512 numbers per branch
        return torch.baddbmm(self.b_out.transpose(1, 2), w_t, r.transpose(1, 2)).transpose(1, 2)

    def forward_saving(self, xy: torch.Tensor, table: torch.Tensor, t: torch.Tensor):
        """forward() for training: the same math, keeping what backward() needs. -> (out (K, B, 2), saved)."""
        k, b, _ = xy.shape
        emb4 = sinusoidal(xy, COORD_SCALE, self.freqs)  # (K, B, 2, 128): [sin, cos] per coordinate
        emb = emb4.view(k, b, -1)  # (K, B, 256) = [sin x, cos x, sin y, cos y]
        h = table.index_select(1, t).baddbmm_(emb, self.w_in_xy)  # (K, B, 256)
        acts = []  # relu(h) entering each residual block and the output layer
        for w, bias in zip(self.w_res, self.b_res):
            r = torch.relu(h)
            acts.append(r)
            h = h.baddbmm_(r, w).add_(bias)  # h + relu(h) W + b, in place: the old h is not needed
        r = torch.relu(h)
        acts.append(r)
        return self.output(r), (emb4, emb, acts, t, table.shape[1])

    def backward(self, saved, d_out: torch.Tensor, t_embed: torch.Tensor) -> torch.Tensor | None:
        """Write every parameter's .grad for dL/d out = d_out (K, B, 2).

        Returns dL/d xy of the last branch, (B, 2), when K = 2 (the local branch, whose input
        depends on the upscale layer); None for one branch.
        """
        emb4, emb, acts, t, n_t = saved
        k, b = d_out.shape[:2]
        self.w_out.grad.copy_(torch.bmm(d_out.transpose(1, 2), acts[-1]).transpose(1, 2))  # skinny: as output()
        torch.sum(d_out, 1, keepdim=True, out=self.b_out.grad)
        dh = relu_grad_(torch.bmm(d_out, self.w_out.transpose(1, 2)), acts[-1])  # (K, B, 256)
        for i in reversed(range(len(self.w_res))):
            w, r = self.w_res[i], acts[i]
            torch.bmm(r.transpose(1, 2), dh, out=w.grad)
            torch.sum(dh, 1, keepdim=True, out=self.b_res[i].grad)
            dh = relu_grad_(torch.bmm(dh, w.transpose(1, 2)), r).add_(dh)
        # first layer: coordinates part, and the timestep table's rows gathered by t
        torch.bmm(emb.transpose(1, 2), dh, out=self.w_in_xy.grad)
        d_table = sum_by_index(dh, t, n_t)  # (K, T, 256)
        torch.bmm(t_embed.T.expand(k, -1, -1), d_table, out=self.w_in_t.grad)
        torch.sum(d_table, 1, keepdim=True, out=self.b_in.grad)
        if k == 1:  # the global branch's input needs no gradient
            return None
        half = emb4.shape[-1] // 2
        sin, cos = emb4[-1, ..., :half], emb4[-1, ..., half:]
        d_emb = (dh[-1] @ self.w_in_xy[-1].T).view(b, 2, -1)  # (B, 2, 128)
        # d/dv [sin(s v f), cos(s v f)] = s f [cos, -sin]
        d_arg = d_emb[..., :half] * cos - d_emb[..., half:] * sin  # (B, 2, 64)
        return d_arg @ (self.freqs * COORD_SCALE)  # (B, 2)


class Denoiser(nn.Module):
    """eps_hat = alpha(t) g + (1 - alpha(t)) l over the branches; baseline has one branch, no mix."""

    def __init__(self, variant: str, timesteps: int = 100, weight_net: str = "sigmoid"):
        super().__init__()
        self.variant = variant
        dual = variant != "baseline"
        self.branches = Branches(2 if dual else 1)
        # The local branch sees the first N_UPSCALED outputs of a learned Linear(2, 4) "upscaling".
        self.upscale = nn.Linear(2, 4) if dual else None
        self.weight_net = _weight_net(weight_net) if variant == "adaptive" else None
        self.register_buffer("t_embed", sinusoidal(torch.arange(timesteps).float(), 1.0), persistent=False)

    def alpha_table(self) -> torch.Tensor | None:
        """alpha(t) for every timestep, (T,): the global branch's weight; None for the baseline."""
        if self.variant == "baseline":
            return None
        if self.variant == "fixed":
            return torch.full((self.t_embed.shape[0],), FIXED_ALPHA, device=self.t_embed.device)
        return alpha_from_logits(self.weight_net(self.t_embed))

    def tables(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Everything that depends on t alone, for all T timesteps: the first layer's timestep share
        (K, T, 256) and alpha(t) (T,) or None. While the weights stay fixed (sampling, evaluation)
        compute them once and pass them to forward (a 10k-point sampling then skips 2,000 recomputations)."""
        return self.branches.t_table(self.t_embed), self.alpha_table()

    def forward(self, x: torch.Tensor, t, tables: tuple | None = None) -> torch.Tensor:
        """x (B, 2), t (B,) long or one int for the whole batch -> eps_hat (B, 2).

        tables: this model's tables(), if they are at hand; computed here otherwise.
        """
        t_table, alpha = self.tables() if tables is None else tables
        if self.variant == "baseline":
            return self.branches(x[None], t_table, t)[0]
        local = x @ self.upscale.weight[:N_UPSCALED].T + self.upscale.bias[:N_UPSCALED]  # (B, 2)
        g, l = self.branches(torch.stack([x, local]), t_table, t)  # (B, 2) each
        alpha = alpha[t] if isinstance(t, int) else alpha[t][:, None]
        return l + alpha * (g - l)

    def branch_outputs(self, x: torch.Tensor, t: int) -> dict:
        """The parts of forward(x, t) apart: {"global": g, "local": l, "alpha": alpha(t), "mix": the
        output} for a dual model; a baseline's one branch is its "mix" (no global/local/alpha)."""
        t_table, alpha = self.tables()
        if self.variant == "baseline":
            return {"global": None, "local": None, "alpha": None, "mix": self.branches(x[None], t_table, t)[0]}
        local = x @ self.upscale.weight[:N_UPSCALED].T + self.upscale.bias[:N_UPSCALED]
        g, l = self.branches(torch.stack([x, local]), t_table, t)
        a = alpha[t]
        return {"global": g, "local": l, "alpha": a, "mix": l + a * (g - l)}

    @torch.no_grad()
    def mse_and_grads(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """loss = MSE(forward(xt, t), eps), and every parameter's .grad written (not accumulated).

        Each .grad must already exist (train.flatten_ makes them). Same math as forward(); the
        local input is one fused addmm here.
        """
        br, b = self.branches, len(xt)
        if self.variant == "baseline":
            xy = xt[None]
        else:
            up_w, up_b = self.upscale.weight, self.upscale.bias
            local = torch.addmm(up_b[:N_UPSCALED], xt, up_w[:N_UPSCALED].T)  # (B, 2)
            xy = torch.stack([xt, local])  # (2, B, 2)
        out, saved = br.forward_saving(xy, br.t_table(self.t_embed), t)  # (K, B, 2)
        if self.variant == "baseline":
            eps_hat = out[0]
        else:
            if self.variant == "adaptive":
                alpha_table, alpha_inputs = _alpha_forward(self.weight_net, self.t_embed)  # (T,)
                alpha = alpha_table.index_select(0, t)[:, None]
            else:
                alpha = torch.full((b, 1), FIXED_ALPHA, device=xt.device)
            g, l = out[0], out[1]
            diff = g - l
            eps_hat = torch.addcmul(l, alpha, diff)
        err = eps_hat - eps
        loss = err.pow(2).mean()

        d_hat = err * (2.0 / err.numel())  # dL/d eps_hat, (B, 2)
        if self.variant == "baseline":
            d_out = d_hat[None]
        else:
            d_out = torch.stack([alpha * d_hat, (1 - alpha) * d_hat])  # (2, B, 2)
            if self.variant == "adaptive":
                d_alpha = sum_by_index((d_hat * diff).sum(1), t, len(alpha_table))  # (T,)
                _alpha_backward(self.weight_net, alpha_inputs, alpha_table, d_alpha)
        d_local = br.backward(saved, d_out, self.t_embed)
        if d_local is not None:  # the upscale layer: only its first N_UPSCALED rows are used
            up_w.grad.zero_()
            up_b.grad.zero_()
            torch.mm(d_local.T, xt, out=up_w.grad[:N_UPSCALED])
            torch.sum(d_local, 0, out=up_b.grad[:N_UPSCALED])
        return loss.detach()


def alpha_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(T, 1) -> sigmoid; (T, 2) -> softmax over (global, local): the global branch's weight, (T,)."""
    return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)[:, 0]


def _weight_net(kind: str) -> nn.Module:
    if kind == "sigmoid":  # the tables' net: 128 -> 256 -> 1, sigmoid
        return nn.Sequential(nn.Linear(EMBED_DIM, 256), nn.ReLU(), nn.Linear(256, 1))
    if kind == "softmax":  # the later, deeper net: 128 -> 256 -> 128 -> 2, softmax over (g, l)
        return nn.Sequential(nn.Linear(EMBED_DIM, 256), nn.LeakyReLU(0.2), nn.Linear(256, 128),
                             nn.LeakyReLU(0.2), nn.Linear(128, 2))
    raise ValueError(f"unknown weight_net {kind!r}; choose one of: {', '.join(WEIGHT_NETS)}")


def _alpha_forward(net: nn.Sequential, t_embed: torch.Tensor):
    """alpha(t) for every t, (T,), as Denoiser.alpha_table, plus each layer's input for the backward."""
    inputs, a = [], t_embed
    for layer in net:
        inputs.append(a)
        a = torch.addmm(layer.bias, a, layer.weight.T) if isinstance(layer, nn.Linear) else layer(a)
    inputs.append(a)  # the logits
    return alpha_from_logits(a), inputs


def _alpha_backward(net: nn.Sequential, inputs: list, alpha: torch.Tensor, d_alpha: torch.Tensor):
    """Write the weight net's parameter gradients for dL/d alpha(t) = d_alpha, (T,)."""
    logits = inputs[-1]
    d = (d_alpha * alpha * (1 - alpha))[:, None]  # sigmoid: d alpha / d logit = alpha (1 - alpha)
    if logits.shape[1] > 1:  # softmax, alpha = p_0: d alpha / d logit_j = p_0 ([j = 0] - p_j)
        p = torch.softmax(logits, 1)
        d = d_alpha[:, None] * alpha[:, None] * (torch.nn.functional.one_hot(
            torch.zeros((), dtype=torch.long, device=p.device), p.shape[1]) - p)
    for i in reversed(range(len(net))):
        layer, a_in = net[i], inputs[i]
        if isinstance(layer, nn.Linear):
            torch.mm(d.T, a_in, out=layer.weight.grad)
            torch.sum(d, 0, out=layer.bias.grad)
            if i:
                d = d @ layer.weight
        elif isinstance(layer, nn.ReLU):
            d = relu_grad_(d, a_in)
        elif isinstance(layer, nn.LeakyReLU):
            d = torch.ops.aten.leaky_relu_backward(d, a_in, layer.negative_slope, False)
        else:
            raise TypeError(f"no hand-written backward for {type(layer).__name__}")


def build_model(config: TrainConfig) -> Denoiser:
    return Denoiser(config.variant, config.timesteps, config.weight_net)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
