"""Stacked runs: many configs trained as one model per step, each run with its own everything.

A run on a GPU is launch-bound: its matmuls (256 points x 256 features) leave the card nearly
idle. Runs whose settings agree but for dataset and seed (a "group") are stacked: their
parameters, gradients, AdamW state and EMA are rows of (R, P) tensors, and one vmapped
forward/backward (torch.func) computes every run's loss and gradient in the same kernels.
Groups of other variants join the same step, so the whole sweep's step is one CUDA graph.

What stays per run, exactly as a single run (train.py) has it: the seeded init, its generator and
the order of its draws (batch indices, t, noise; then the eval loss's, the sampling's, the oracle
start's), the clipping of its own gradient norm, its lr schedule and EMA. What differs: the
gradient comes from autograd (vmap) instead of the hand-written backward, so a stacked run
equals its single self up to float rounding (tests/lib/test_stack.py measures how close).
Evaluating, scoring and storing stacked runs: stack_sweep.py.
"""
from __future__ import annotations

import math
import time
import warnings

import torch
from torch.func import functional_call, grad_and_value, vmap

from .config import TrainConfig
from .events import TrainingFailed
from .train import Ema, batch_indices, cosine_lr, make_optimizer, set_lr, setup
from .system import keep_freed_memory, precision, synchronize

PER_RUN = ("dataset", "seed")  # what may differ inside a group; every other setting is shared


def group_key(config: TrainConfig) -> tuple:
    return tuple((k, v) for k, v in config.to_dict().items() if k not in PER_RUN)


def stack_key(config: TrainConfig) -> tuple:
    """Groups with this key train in one step: the step count, batch and data size line up."""
    return config.steps, config.batch_size, config.n_points


class Group:
    """R runs of one variant and settings: parameters as rows of one (R, P) tensor, and views of it."""

    def __init__(self, configs: list[TrainConfig], device: torch.device):
        self.configs, self.device = configs, device
        runs = [setup(c, device) for c in configs]  # each seeded exactly as a single run
        self.models = [r[0] for r in runs]
        self.emas = [r[1] for r in runs]
        self.template, self.schedule = runs[0][0], runs[0][2]
        self.data = torch.stack([r[3] for r in runs])  # (R, n, 2)
        self.gens = [r[4] for r in runs]
        self.names = [n for n, _ in self.template.named_parameters()]
        self.flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in self.models])
        self.flat.grad = torch.zeros_like(self.flat)  # (R, P)
        self.ema_flat = self.flat.clone()
        self.params = self._views(self.flat)
        self.ema_params = self._views(self.ema_flat)
        c = configs[0]
        self.opt = make_optimizer([self.flat], c, device)
        self.ema = Ema([self.flat], [self.ema_flat])
        self.batches = [batch_indices(c.n_points, c.batch_size, g, device) for g in self.gens]
        self.grads = vmap(grad_and_value(self._loss))
        self.losses = torch.zeros(len(configs), c.steps, device=device)

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, p in self.template.named_parameters():
            out[name] = flat[:, offset:offset + p.numel()].view(len(flat), *p.shape)
            offset += p.numel()
        return out

    def _loss(self, params, x0, t, eps):
        """One run's training loss (vmapped over the runs): MSE of the target (+ lambda VLB KL)."""
        s, c = self.schedule, self.configs[0]
        xt = s.add_noise(x0, eps, t)  # (B, 2)
        out = functional_call(self.template, params, (xt, t)).float()  # (B, 2)
        loss = (out - s.target(x0, eps, t)).pow(2).mean()
        if c.kl_weight:
            loss = loss + c.kl_weight * s.vlb_kl(x0, xt, out, t).mean()
        return loss

    def draw(self):
        """Each run's batch, t and noise, from its own generator in a single run's order."""
        c = self.configs[0]
        idx = torch.stack([next(b) for b in self.batches])  # (R, B)
        t = torch.stack([torch.randint(0, c.timesteps, (idx.shape[1],), generator=g, device=self.device)
                         for g in self.gens])
        eps = torch.stack([torch.randn(idx.shape[1], 2, generator=g, device=self.device) for g in self.gens])
        return idx, t, eps

    def step(self, idx, t, eps, warmup: bool = False) -> torch.Tensor:
        """Loss, per-run gradient clipping and AdamW for every run; -> losses (R,)."""
        r = torch.arange(len(self.configs), device=self.device)[:, None]
        x0 = self.data[r, idx]  # (R, B, 2)
        with precision(self.configs[0].compute_precision, self.device):
            grads, loss = self.grads(self.params, x0, t, eps)
        torch.cat([grads[n].reshape(len(self.configs), -1) for n in self.names], 1, out=self.flat.grad)
        if warmup:
            return loss.detach()
        norms = torch.linalg.vector_norm(self.flat.grad, dim=1, keepdim=True)  # (R, 1): each run's own
        self.flat.grad.mul_(torch.clamp(self.configs[0].grad_clip / (norms + 1e-6), max=1.0))
        self.opt.step()
        return loss.detach()

    def finish(self) -> None:
        """Copy each run's rows back into its own model and EMA model (for evaluation and saving)."""
        with torch.no_grad():
            for i, (m, e) in enumerate(zip(self.models, self.emas)):
                torch.nn.utils.vector_to_parameters(self.flat[i].clone(), m.parameters())
                torch.nn.utils.vector_to_parameters(self.ema_flat[i].clone(), e.parameters())


class Stack:
    """Groups sharing steps, batch size and data size: one step for all of them."""

    def __init__(self, configs: list[TrainConfig], device: torch.device):
        keys = {stack_key(c) for c in configs}
        if len(keys) != 1:
            raise ValueError("a stack needs one step count, batch size and n_points; split the configs with stack_key")
        by_group: dict[tuple, list[TrainConfig]] = {}
        for c in configs:
            by_group.setdefault(group_key(c), []).append(c)
        self.groups = [Group(cs, device) for cs in by_group.values()]
        self.device, self.config = device, configs[0]

    def draw(self):
        return [g.draw() for g in self.groups]

    def step(self, draws, warmup: bool = False):
        return [g.step(idx, t, eps, warmup) for g, (idx, t, eps) in zip(self.groups, draws)]


class _Graphed:
    """The whole stack's step as one CUDA graph; the draws happen outside and are copied in."""

    def __init__(self, stack: Stack, draws):
        self.stack = stack
        self.inputs = [tuple(x.clone() for x in d) for d in draws]
        self.graph = None

    def __call__(self, draws):
        for dst, src in zip(self.inputs, draws):
            for a, b in zip(dst, src):
                a.copy_(b)
        if self.graph is None:
            dev = self.stack.device
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(side):
                self.stack.step(self.inputs, warmup=True)  # cuBLAS and autograd set up outside the capture
                with torch.cuda.graph(self.graph, stream=side):
                    self.out = self.stack.step(self.inputs)
            torch.cuda.current_stream(dev).wait_stream(side)
        self.graph.replay()
        return self.out


def train_stack(configs: list[TrainConfig], device: str | torch.device = "cuda", cuda_graph: bool | None = None,
                every: int | None = None):
    """Train configs stacked; yield (done steps, total, mean loss over runs) every `every` steps;
    return [(group, training_time)]. `trained = yield from train_stack(...)`."""
    device = torch.device(device)
    for c in configs:
        c.validate()
    if device.type == "cpu":
        keep_freed_memory()
    stack = Stack(configs, device)
    c = stack.config
    cuda_graph = device.type == "cuda" and c.steps > 20 if cuda_graph is None else cuda_graph
    every = every or max(1, c.steps // 100)
    graphed, last = None, 0
    for cfg in configs:
        with precision(cfg.compute_precision, device):  # tf32 on a CPU: refused before any work
            pass
    synchronize(device)
    start = time.perf_counter()
    for s in range(c.steps):
        for g in stack.groups:
            set_lr(g.opt, cosine_lr(g.configs[0].lr, s, c.steps))
        draws = stack.draw()
        full = draws[0][0].shape[1] == c.batch_size
        if cuda_graph and s >= 2 and full:
            try:
                graphed = graphed or _Graphed(stack, draws)
                losses = graphed(draws)
            except RuntimeError as e:  # a capture this torch cannot do: the same step, eagerly
                warnings.warn(f"stacked step not captured as a CUDA graph ({str(e).splitlines()[0]}); running eagerly")
                cuda_graph, graphed = False, None
                losses = stack.step(draws)
        else:
            losses = stack.step(draws)
        for g, loss in zip(stack.groups, losses):
            g.ema.update(s)
            g.losses[:, s] = loss
        done = s + 1
        if done % every == 0 or done == c.steps:
            mean = torch.stack([g.losses[:, last:done].mean() for g in stack.groups]).mean().item()
            if not math.isfinite(mean):
                bad = [cfg.run_id for g in stack.groups for cfg, v in zip(g.configs, g.losses[:, last:done].mean(1).tolist())
                       if not math.isfinite(v)]
                raise TrainingFailed(f"training loss became {mean} at step {done} in {', '.join(bad)}; try a lower lr")
            yield done, c.steps, mean
            last = done
    synchronize(device)
    elapsed = time.perf_counter() - start
    for g in stack.groups:
        g.finish()
    return [(g, elapsed) for g in stack.groups]
