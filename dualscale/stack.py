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
from .train import Ema, cosine_lr, make_optimizer, set_lr, setup
from .system import keep_freed_memory, arithmetic, synchronize

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
        # Each run's shuffled pass over its points (batch_indices' draws, kept on the device): rows of
        # perm, the next batch starting at pos. A captured step reads and advances pos itself.
        self.perm = torch.empty(len(configs), c.n_points, dtype=torch.long, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.offsets = torch.arange(c.batch_size, device=device)
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

    def new_pass(self) -> None:
        """Each run's next shuffled pass over its points, drawn as batch_indices draws it."""
        for row, g in zip(self.perm, self.gens):
            row.copy_(torch.randperm(len(row), generator=g, device=self.device))
        self.pos.zero_()

    def draw(self, size: int):
        """Each run's batch, t and noise, from its own generator in a single run's order. Only
        device work (no host sync), so that a CUDA graph can capture it with the step."""
        c = self.configs[0]
        idx = self.perm[:, self.pos + self.offsets[:size]]  # (R, size): the pass's next slice
        self.pos.add_(size)
        t = torch.stack([torch.randint(0, c.timesteps, (size,), generator=g, device=self.device) for g in self.gens])
        eps = torch.stack([torch.randn(size, 2, generator=g, device=self.device) for g in self.gens])
        return idx, t, eps

    def step(self, idx, t, eps, warmup: bool = False) -> torch.Tensor:
        """Loss, per-run gradient clipping and AdamW for every run; -> losses (R,)."""
        r = torch.arange(len(self.configs), device=self.device)[:, None]
        x0 = self.data[r, idx]  # (R, B, 2)
        with arithmetic(self.configs[0].compute_precision, self.device):
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

    def new_pass(self) -> None:
        for g in self.groups:
            g.new_pass()

    def step(self, size: int) -> list[torch.Tensor]:
        """Draw every run's batch of `size` and take the step: [losses (R,) per group]."""
        return [g.step(*g.draw(size)) for g in self.groups]

    def warmup(self) -> None:
        """The step's kernels on fixed inputs, nothing drawn and nothing updated (before a capture)."""
        for g in self.groups:
            r, b = len(g.configs), self.config.batch_size
            zeros = torch.zeros(r, b, dtype=torch.long, device=self.device)
            g.step(zeros, zeros, torch.zeros(r, b, 2, device=self.device), warmup=True)


class DrawsDiffer(RuntimeError):
    pass


class _Graphed:
    """The whole stack's full-batch step as one CUDA graph, every run's draws included.

    Each run's generator is registered with the graph, so a replay draws from it exactly what the
    eager step would (torch keeps the philox offsets of a captured region; see CUDAGeneratorImpl's
    "CUDA Graph-safe RNG states"). Before the first real replay this is checked: one replay on a
    copy of the state, its draws compared with eager draws from twins of the generators, and the
    state put back. Draws that differ raise DrawsDiffer and the caller steps eagerly.
    """

    def __init__(self, stack: Stack):
        self.stack, dev = stack, stack.device
        self.graph = torch.cuda.CUDAGraph()
        if not hasattr(self.graph, "register_generator_state"):  # torch < 2.5
            raise RuntimeError("this torch cannot register generators with a CUDA graph")
        for g in stack.groups:
            for gen in g.gens:
                self.graph.register_generator_state(gen)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            stack.warmup()  # cuBLAS and autograd set up outside the capture
            with torch.cuda.graph(self.graph, stream=side):
                self.draws = [g.draw(stack.config.batch_size) for g in stack.groups]
                self.out = [g.step(*d) for g, d in zip(stack.groups, self.draws)]
        torch.cuda.current_stream(dev).wait_stream(side)
        check_draws(stack, lambda: (self.graph.replay(), self.draws)[1])

    def __call__(self) -> list[torch.Tensor]:
        self.graph.replay()
        return self.out


def check_draws(stack: Stack, replay) -> None:
    """Run replay() (one full-batch step of every run, returning the [(idx, t, eps)] it drew) on a
    copy of the state; raise DrawsDiffer unless its draws equal eager draws from twins of the
    generators. The parameters, optimizer state, pass positions and generators are put back."""
    groups, b, dev = stack.groups, stack.config.batch_size, stack.device
    states = [[gen.get_state() for gen in g.gens] for g in groups]
    kept = [t for g in groups for t in (g.flat, g.pos, *(v for st in g.opt.state.values() for v in st.values()
                                                          if isinstance(v, torch.Tensor)))]
    saved = [t.clone() for t in kept]
    starts = [g.pos.clone() for g in groups]
    try:
        for g, start, group_states, (idx, t, eps) in zip(groups, starts, states, replay()):
            if not torch.equal(idx, g.perm[:, start + g.offsets]):
                raise DrawsDiffer("the captured step's batch indices differ from the eager step's")
            for i, state in enumerate(group_states):
                twin = torch.Generator(device=dev)
                twin.set_state(state)
                if not (torch.equal(t[i], torch.randint(0, g.configs[0].timesteps, (b,), generator=twin, device=dev))
                        and torch.equal(eps[i], torch.randn(b, 2, generator=twin, device=dev))):
                    raise DrawsDiffer(f"the captured step's draws differ from the eager step's ({g.configs[i].run_id})")
    finally:
        for t, v in zip(kept, saved):
            t.copy_(v)
        for g, group_states in zip(groups, states):
            for gen, state in zip(g.gens, group_states):
                gen.set_state(state)


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
    per_pass = math.ceil(c.n_points / c.batch_size)  # batch_indices: the last batch of a pass may be short
    graphed, last = None, 0
    for cfg in configs:
        with arithmetic(cfg.compute_precision, device):  # tf32 on a CPU: refused before any work
            pass
    synchronize(device)
    start = time.perf_counter()
    for s in range(c.steps):
        for g in stack.groups:
            set_lr(g.opt, cosine_lr(g.configs[0].lr, s, c.steps))
        if s % per_pass == 0:
            stack.new_pass()
        size = min(c.batch_size, c.n_points - (s % per_pass) * c.batch_size)
        if cuda_graph and s >= 2 and size == c.batch_size:
            try:
                graphed = graphed or _Graphed(stack)
                losses = graphed()
            except RuntimeError as e:  # a capture this torch cannot do, or draws that differ: step eagerly
                warnings.warn(f"stacked step not captured as a CUDA graph ({str(e).splitlines()[0]}); running eagerly")
                cuda_graph, graphed = False, None
                losses = stack.step(size)
        else:
            losses = stack.step(size)
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
