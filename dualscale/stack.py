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
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from .config import TrainConfig
from .diffusion import SAMPLE_CHUNK
from .evaluate import EVAL_BATCH, EVAL_CHUNK, TRAJECTORY_POINTS
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

    def draw(self, batch: int | None = None):
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


@dataclass
class StackTrained:
    group: Group
    training_time: float      # the whole stack's wall time


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


# ---- evaluation, stacked: eval loss and sampling for a group's runs in the same kernels ----

def _forward(group: Group, params: dict, x: torch.Tensor, t) -> torch.Tensor:
    """Every run's network on its own points: x (R, N, 2), t (R, N) or one int -> (R, N, 2).

    Under enable_grad the forward takes its out-of-place path (nothing here requires grad, so no
    graph is kept): vmap has no batching rule for the in-place baddbmm_ and would loop over runs."""
    with torch.enable_grad():
        return _forward_vmapped(group, params, x, t)


def _forward_vmapped(group: Group, params: dict, x: torch.Tensor, t) -> torch.Tensor:
    if isinstance(t, int):
        return vmap(lambda p, xx: functional_call(group.template, p, (xx, t)))(params, x)
    return vmap(lambda p, xx, tt: functional_call(group.template, p, (xx, tt)))(params, x, t)


@torch.inference_mode()
def eval_losses(group: Group) -> np.ndarray:
    """evaluate.eval_loss for each run (the online weights), stacked: (R,)."""
    s, data = group.schedule, group.data
    per_sample = []
    for x0 in data.split(EVAL_BATCH * EVAL_CHUNK, dim=1):  # (R, chunk, 2)
        n = x0.shape[1]
        t = torch.stack([torch.randint(0, s.timesteps, (n,), generator=g, device=data.device) for g in group.gens])
        eps = torch.stack([torch.randn(n, 2, generator=g, device=data.device) for g in group.gens])
        xt = s.sqrt_abar[t][..., None] * x0 + s.sqrt_one_minus_abar[t][..., None] * eps
        target = eps if s.prediction == "eps" else s.sqrt_abar[t][..., None] * eps - s.sqrt_one_minus_abar[t][..., None] * x0
        out = _forward(group, group.params, xt, t).float()
        per_sample.append((out - target).pow(2).mean(2))  # (R, chunk)
    se = torch.cat(per_sample, 1).double().cpu().numpy()  # (R, n)
    starts = np.arange(0, se.shape[1], EVAL_BATCH)
    means = np.add.reduceat(se, starts, axis=1) / np.diff(np.append(starts, se.shape[1]))
    return means.mean(1)


@torch.inference_mode()
def sample_stack(group: Group, n: int, keep: int = 0, start: torch.Tensor | None = None):
    """diffusion.sample for each run (EMA weights), stacked; the same draws per run and chunking
    as a single run on this device. -> (samples (R, n, 2), trajectory (T+1, R, keep, 2) or None)."""
    s, dev = group.schedule, group.data.device
    chunk = n if dev.type == "cuda" else SAMPLE_CHUNK
    if start is None:
        start = torch.stack([torch.randn(n, 2, generator=g, device=dev) for g in group.gens])  # (R, n, 2)
    out, frames = [], []
    for i, x in enumerate(start.split(chunk, dim=1)):
        here = min(x.shape[1], keep - i * chunk)
        fr = [x[:, :here].clone()] if here > 0 else None
        for t in range(s.timesteps - 1, -1, -1):
            pred = _forward(group, group.ema_params, x, t).float()
            noise = torch.stack([torch.randn(x.shape[1:], generator=g, device=dev) for g in group.gens]) if t > 0 else None
            x = s.step(pred, t, x, noise)
            if fr is not None:
                fr.append(x[:, :here].clone())
        out.append(x)
        if fr is not None:
            frames.append(torch.stack(fr))
    traj = torch.cat(frames, 2).cpu().numpy() if keep else None  # (T+1, R, keep, 2)
    return torch.cat(out, 1).cpu().numpy(), traj


def oracle_starts(group: Group, n: int) -> torch.Tensor:
    """evaluate.oracle_start for each run, from its own generator: (R, n, 2)."""
    s, dev = group.schedule, group.data.device
    starts = []
    for data, g in zip(group.data, group.gens):
        idx = torch.randint(0, len(data), (n,), generator=g, device=dev)
        eps = torch.randn(n, 2, generator=g, device=dev)
        starts.append(s.start(data[idx], eps))
    return torch.stack(starts)


def evaluate_group(group: Group, n_samples: int, training_time: float, keep: int = TRAJECTORY_POINTS):
    """Eval loss, samples (timed), oracle-start samples and alpha(t) for every run of a group.

    Returns one dict per run: {"eval_loss", "inference_time", "training_time", "samples", "oracle", "alpha",
    "trajectory", "losses"}; training_time is as given (the caller's share of the stack's wall time), the
    inference time the group's sampling wall time divided by its runs."""
    dev, r = group.device, len(group.configs)
    with precision(group.configs[0].compute_precision, dev):
        losses = eval_losses(group)
        synchronize(dev)
        t0 = time.perf_counter()
        samples, traj = sample_stack(group, n_samples, keep=min(keep, n_samples))
        synchronize(dev)
        inference = (time.perf_counter() - t0) / r
        oracle, _ = sample_stack(group, n_samples, start=oracle_starts(group, n_samples))
    alphas = [m.alpha_table() for m in group.emas]
    out = []
    for i in range(r):
        a = alphas[i]
        out.append({"eval_loss": float(losses[i]), "inference_time": inference, "training_time": training_time,
                    "samples": samples[i].astype(np.float32), "oracle": oracle[i].astype(np.float32),
                    "alpha": None if a is None else a.detach().float().cpu().numpy(),
                    "trajectory": None if traj is None else traj[:, i].astype(np.float16),
                    "losses": group.losses[i].cpu().numpy()})
    return out


# ---- a stacked sweep: train, evaluate, score on the CPU cores, store ----

def score(dataset: str, n_points: int, samples: np.ndarray, oracle: np.ndarray, abar_last: float) -> dict:
    """The sample metrics, kl_oracle_start and start_mismatch of one run (runs in a CPU worker)."""
    from .data import make_dataset
    from .metrics import kl_divergence, sample_metrics, start_mismatch

    real = make_dataset(dataset, n_points)
    return {**sample_metrics(real, samples), "kl_oracle_start": kl_divergence(real, oracle),
            "start_mismatch": start_mismatch(real, abar_last)}


LOSS_BLOCK = 100  # a light run's loss history: means of this many steps


def block_means(losses: np.ndarray, block: int) -> np.ndarray:
    """Means of consecutive blocks of `block` steps (the last one may be shorter), float32."""
    starts = np.arange(0, len(losses), block)
    return (np.add.reduceat(losses.astype(np.float64), starts) / np.diff(np.append(starts, len(losses)))).astype(np.float32)


def stacks_of(configs: list[TrainConfig]) -> list[list[TrainConfig]]:
    """Split configs into stacks (same steps, batch size and n_points), biggest first."""
    out: dict[tuple, list[TrainConfig]] = {}
    for c in configs:
        out.setdefault(stack_key(c), []).append(c)
    return sorted(out.values(), key=len, reverse=True)


def run_stacks(configs: list[TrainConfig], store, device: torch.device, half: bool = False, light: bool = False,
               command: str = "", jobs: int | None = None):
    """Train, evaluate and store configs in stacks. Yields ("step", done, total) while training and
    ("done", config, run) as each run is stored. light: store no weights and no trajectory, and
    the samples as float16, with every sample metric computed from those stored samples."""
    from joblib import Parallel

    workers = Parallel(n_jobs=jobs or -1, backend="loky", return_as="generator")
    try:
        yield from _run_stacks(configs, store, device, half, light, command, workers)
    finally:  # the reusable scoring workers would idle on for minutes after the command returns
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


def _run_stacks(configs, store, device, half, light, command, workers):
    from joblib import delayed

    from .runs import made_record

    for configs_here in stacks_of(configs):
        with contextlib.ExitStack() as locks:
            for c in configs_here:
                locks.enter_context(store.lock(c))
            trained = yield from _train_progress(configs_here, device)
            for group, training_time in trained:
                if half:
                    group.flat.copy_(group.flat.half().float())
                    group.ema_flat.copy_(group.ema_flat.half().float())
                    group.finish()
                results = evaluate_group(group, group.configs[0].n_samples, training_time / len(configs_here),
                                         keep=0 if light else TRAJECTORY_POINTS)
                for r in results:
                    if light:
                        r["samples"] = r["samples"].astype(np.float16)
                abar = float(group.schedule.alphas_cumprod[-1])
                scores = list(workers(delayed(score)(c.dataset, c.n_points, r["samples"], r["oracle"], abar)
                                      for c, r in zip(group.configs, results)))
                for i, (c, r, sc) in enumerate(zip(group.configs, results, scores)):
                    made = {**made_record(device, half, command), "stack": len(configs_here),
                            **({"samples": "float16"} if light else {})}
                    metrics = {"training_time": r["training_time"], "eval_loss": r["eval_loss"],
                               "inference_time": r["inference_time"], **sc,
                               **{k: made[k] for k in ("device", "threads", "torch")}}
                    arrays = {"samples": r["samples"], "alpha": r["alpha"], "losses": r["losses"].astype(np.float32)}
                    if light:  # the loss history as means of LOSS_BLOCK steps: 400 bytes, not 40 kB
                        arrays.update(losses=block_means(r["losses"], LOSS_BLOCK), loss_block=np.array(LOSS_BLOCK))
                    weights = None
                    if not light:
                        arrays.update(traj_t=np.arange(c.timesteps, -1, -1), trajectory=r["trajectory"])
                        weights = {"online": group.models[i].state_dict(), "ema": group.emas[i].state_dict()}
                    yield "done", c, store.save(c, weights, metrics, arrays, half=half, made=made)


def _train_progress(configs, device):
    gen = train_stack(configs, device)
    while True:
        try:
            done, total, loss = next(gen)
        except StopIteration as end:
            return end.value
        yield "step", done, total
