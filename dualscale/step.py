"""The training loss and its gradients, written out by hand for the stacked-branch denoiser.

On a CPU, autograd's graph adds ~60 small ops to a step whose matmuls take ~6 ms; this module
does the same math (the MSE of eps, the gradients of every parameter) with the matmuls and a
handful of elementwise kernels, and nothing else (an in-process A/B: 13% off a 2-thread adaptive
step, 4% off a baseline step):
- the timestep's share of the first layer is a (K, T, 256) table gathered per sample, and its
  gradient is summed per timestep (sum_by_index) before one small matmul;
- the global branch's input needs no gradient, so its first layer's grad-input is skipped;
- gradients are written into buffers that stay attached to the parameters, and all parameters
  (and all gradients) are views of one flat tensor, so clipping, AdamW and the EMA are a few
  kernels over one tensor instead of a loop over twenty.
`tests/test_math.py` checks every gradient against autograd for every variant.
"""
from __future__ import annotations

import torch

from .diffusion import NoiseSchedule
from .models import Denoiser, sinusoidal


def _relu_grad_(grad: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """grad *= (activation > 0), in place: the relu's backward without a new buffer."""
    return torch.ops.aten.threshold_backward.grad_input(grad, activation, 0.0, grad_input=grad)


def flatten_(model: torch.nn.Module, grad: bool = True) -> torch.Tensor:
    """Make every parameter of `model` (and its .grad) a view of one flat tensor; return that tensor.

    The flat tensor is what the optimizer updates; the module sees each update through its views.
    """
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    if grad:
        flat.requires_grad_()
        flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.detach()[offset:offset + n].view_as(p)
        if grad:
            p.grad = flat.grad[offset:offset + n].view_as(p)
        offset += n
    return flat


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


class ManualLoss:
    """loss = MSE(eps_hat, eps) for a Denoiser; calling it also writes every parameter's .grad.

    Each .grad must already exist (flatten_ makes them); they are overwritten, not accumulated.
    """

    def __init__(self, model: Denoiser, schedule: NoiseSchedule):
        self.model, self.schedule = model, schedule

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        m, br = self.model, self.model.branches
        k, b = br.w_in_xy.shape[0], len(x0)
        xt = self.schedule.add_noise(x0, eps, t)  # (B, 2)

        # ---- forward, keeping what the backward needs ----
        if k == 2:
            up_w, up_b = m.upscale.weight, m.upscale.bias
            local = torch.addmm(up_b[:2], xt, up_w[:2].T)  # (B, 2)
            xy = torch.stack([xt, local])  # (2, B, 2)
        else:
            xy = xt[None]
        emb4 = sinusoidal(xy, 25.0, br.freqs)  # (K, B, 2, 128): [sin, cos] per coordinate
        half = emb4.shape[-1] // 2
        sin, cos = emb4[..., :half], emb4[..., half:]  # kept for the upscale layer's gradient
        emb = emb4.view(k, b, -1)  # (K, B, 256) = [sin x, cos x, sin y, cos y]
        table = br.t_table(m.t_embed)  # (K, T, 256)
        h = table.index_select(1, t).baddbmm_(emb, br.w_in_xy)  # (K, B, 256)
        acts = []  # relu(h) entering each residual block and the output layer
        for w, bias in zip(br.w_res, br.b_res):
            r = torch.relu(h)
            acts.append(r)
            h = h.baddbmm_(r, w).add_(bias)  # h + relu(h) W + b, in place: the old h is not needed
        r = torch.relu(h)
        acts.append(r)
        out = br.output(r)  # (K, B, 2)

        if k == 1:
            eps_hat = out[0]
        else:
            if m.variant == "adaptive":
                alpha_table, alpha_inputs = _alpha_forward(m.weight_net, m.t_embed)  # (T,)
                alpha = alpha_table.index_select(0, t)[:, None]
            else:
                alpha = torch.full((b, 1), 0.5, device=xt.device)
            g, l = out[0], out[1]
            diff = g - l
            eps_hat = torch.addcmul(l, alpha, diff)
        err = eps_hat - eps
        loss = err.pow(2).mean()

        # ---- backward ----
        d_hat = err * (2.0 / err.numel())  # dL/d eps_hat, (B, 2)
        if k == 1:
            d_out = d_hat[None]
        else:
            d_out = torch.stack([alpha * d_hat, (1 - alpha) * d_hat])  # (2, B, 2)
            if m.variant == "adaptive":
                d_alpha = sum_by_index((d_hat * diff).sum(1), t, len(alpha_table))  # (T,)
                _alpha_backward(m.weight_net, alpha_inputs, alpha_table, d_alpha)
        br.w_out.grad.copy_(torch.bmm(d_out.transpose(1, 2), acts[-1]).transpose(1, 2))  # skinny: as output()
        torch.sum(d_out, 1, keepdim=True, out=br.b_out.grad)
        dh = _relu_grad_(torch.bmm(d_out, br.w_out.transpose(1, 2)), acts[-1])  # (K, B, 256)
        for i in reversed(range(len(br.w_res))):
            w, r = br.w_res[i], acts[i]
            torch.bmm(r.transpose(1, 2), dh, out=w.grad)
            torch.sum(dh, 1, keepdim=True, out=br.b_res[i].grad)
            dh = _relu_grad_(torch.bmm(dh, w.transpose(1, 2)), r).add_(dh)
        # first layer: coordinates part, and the timestep table's rows gathered by t
        torch.bmm(emb.transpose(1, 2), dh, out=br.w_in_xy.grad)
        d_table = sum_by_index(dh, t, table.shape[1])  # (K, T, 256)
        torch.bmm(m.t_embed.T.expand(k, -1, -1), d_table, out=br.w_in_t.grad)
        torch.sum(d_table, 1, keepdim=True, out=br.b_in.grad)
        if k == 2:  # only the local branch's input depends on parameters (the upscale layer)
            d_emb = (dh[1] @ br.w_in_xy[1].T).view(b, 2, -1)  # (B, 2, 128)
            # d/dv [sin(25 v f), cos(25 v f)] = 25 f [cos, -sin]
            d_arg = d_emb[..., :half] * cos[1] - d_emb[..., half:] * sin[1]  # (B, 2, 64)
            d_local = d_arg @ (br.freqs * 25.0)  # (B, 2)
            up_w.grad.zero_()
            up_b.grad.zero_()
            torch.mm(d_local.T, xt, out=up_w.grad[:2])
            torch.sum(d_local, 0, out=up_b.grad[:2])
        return loss.detach()


def _alpha_forward(net: torch.nn.Sequential, t_embed: torch.Tensor):
    """alpha(t) for every t, (T,), as Denoiser.alpha_table, plus each layer's input for the backward."""
    inputs, a = [], t_embed
    for layer in net:
        inputs.append(a)
        a = torch.addmm(layer.bias, a, layer.weight.T) if isinstance(layer, torch.nn.Linear) else layer(a)
    alpha = torch.sigmoid(a[:, 0]) if a.shape[1] == 1 else torch.softmax(a, 1)[:, 0]
    inputs.append(a)  # the logits
    return alpha, inputs


def _alpha_backward(net: torch.nn.Sequential, inputs: list, alpha: torch.Tensor, d_alpha: torch.Tensor):
    """Write the weight net's parameter gradients for dL/d alpha(t) = d_alpha, (T,)."""
    logits = inputs[-1]
    d = (d_alpha * alpha * (1 - alpha))[:, None]  # sigmoid: d alpha / d logit = alpha (1 - alpha)
    if logits.shape[1] > 1:  # softmax, alpha = p_0: d alpha / d logit_j = p_0 ([j = 0] - p_j)
        p = torch.softmax(logits, 1)
        d = d_alpha[:, None] * alpha[:, None] * (torch.nn.functional.one_hot(
            torch.zeros((), dtype=torch.long, device=p.device), p.shape[1]) - p)
    for i in reversed(range(len(net))):
        layer, a_in = net[i], inputs[i]
        if isinstance(layer, torch.nn.Linear):
            torch.mm(d.T, a_in, out=layer.weight.grad)
            torch.sum(d, 0, out=layer.bias.grad)
            if i:
                d = d @ layer.weight
        elif isinstance(layer, torch.nn.ReLU):
            d = _relu_grad_(d, a_in)
        elif isinstance(layer, torch.nn.LeakyReLU):
            d = torch.ops.aten.leaky_relu_backward(d, a_in, layer.negative_slope, False)
        else:
            raise TypeError(f"no hand-written backward for {type(layer).__name__}")
