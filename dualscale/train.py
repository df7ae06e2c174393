"""train(config) -> a generator of Progress events that returns the trained run. No printing, no files.

Same math as the reference: shuffled passes over the points in batches of 256, t ~ U{0..T-1},
MSE on eps (+ lambda * VLB KL), AdamW, global grad-norm clip, cosine lr to 0, EMA with warm-up.
Faster because the batches are index slices of one tensor, the MSE's gradients come from a
hand-written backward (Denoiser.mse_and_grads) into one flat parameter tensor, so clipping, fused
AdamW and the EMA are a few kernels, and the losses stay on the device until an event needs them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import TrainConfig
from .data import make_dataset
from .diffusion import NoiseSchedule, sample
from .events import Progress, TrainingFailed, drain
from .models import Denoiser, build_model
from .system import keep_freed_memory, arithmetic


@dataclass
class Trained:
    """The end of train(): the online and EMA models and what was measured on the way."""
    model: Denoiser
    ema: Denoiser
    schedule: NoiseSchedule
    data: torch.Tensor                    # (n, 2) training points on the device
    losses: np.ndarray                    # (steps,) per-step training loss
    training_time: float
    generator: torch.Generator = field(repr=False)
    precision: str = "fp32"


class Ema:
    """EMA of the weights with the reference's warm-up (shared/reference.md).

    Considered every `every` optimizer steps s (0-based): copy while s <= 110 (warm-up; the
    reference copies through s = 100 and once more at 110), then
    ema <- ema + (1 - decay)(w - ema), decay = min(0.995, 1 - (1 + s - 100)^(-2/3)).
    """

    def __init__(self, online, shadow, every: int = 10, cap: float = 0.995):
        """online, shadow: matching iterables of tensors (e.g. two models' parameters())."""
        self.online = [p.detach() for p in online]
        self.shadow = [p.detach() for p in shadow]
        self.every, self.cap = every, cap

    @staticmethod
    def decay(s: int, cap: float = 0.995) -> float:
        return min(cap, 1.0 - (1.0 + s - 100) ** (-2.0 / 3.0))

    def update(self, s: int) -> None:
        if s % self.every:
            return
        if s <= 110:
            torch._foreach_copy_(self.shadow, self.online)
        else:
            torch._foreach_lerp_(self.shadow, self.online, 1.0 - self.decay(s, self.cap))


class GraphedStep:
    """A training step captured once as a CUDA graph and replayed: one launch instead of ~100.

    A single run on a GPU is launch-bound (benchmarks/launch_bound.py: the GPU is busy 13-27% of
    an eager step on an H200; graphed, 4.6-5.7x faster per step). The batch is still drawn outside, eagerly, from the run's generator, and
    copied into the graph's fixed input tensors, so the random stream and the kernels are those
    of the eager step. Warm-up and capture run on one side stream (cuBLAS sets itself up there
    before the capture, as torch.cuda.graph asks).
    """

    def __init__(self, step, warmup, data: torch.Tensor, batch: int):
        """step(x0, t, eps) -> loss: the whole step; warmup(x0, t, eps): the same kernels, no update."""
        self.step, self.warmup, self.data = step, warmup, data
        self.graph, self.loss = None, None  # captured at the first call; loss: the graph's output
        device = data.device
        self.idx = torch.zeros(batch, dtype=torch.long, device=device)
        self.t = torch.zeros(batch, dtype=torch.long, device=device)
        self.eps = torch.zeros(batch, 2, device=device)

    def __call__(self, idx: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        self.idx.copy_(idx)
        self.t.copy_(t)
        self.eps.copy_(eps)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.loss

    def _capture(self) -> None:
        stream = torch.cuda.Stream(self.data.device)
        stream.wait_stream(torch.cuda.current_stream(self.data.device))
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            self.warmup(self.data[self.idx], self.t, self.eps)  # the step recomputes what it writes
            with torch.cuda.graph(self.graph, stream=stream):
                self.loss = self.step(self.data[self.idx], self.t, self.eps)
        torch.cuda.current_stream(self.data.device).wait_stream(stream)


def cosine_lr(peak: float, step: int, total: int) -> float:
    """torch's CosineAnnealingLR(T_max=total, eta_min=0) in closed form, for 0-based `step`."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / total))


def make_optimizer(params: list, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; fused=True is one kernel for all parameters (CPU and CUDA), identical AdamW math.

    On CUDA the lr is a tensor on the GPU and the optimizer is capturable, so that a step can be
    replayed as a CUDA graph (GraphedStep) while the cosine schedule still moves the lr.
    """
    cuda = device.type == "cuda"
    lr = torch.tensor(config.lr, device=device) if cuda else config.lr
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=config.weight_decay,
                             fused=device.type in ("cpu", "cuda"), capturable=cuda)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)  # in place: a captured step reads it at replay
        else:
            group["lr"] = lr


def clip_norm_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for one flat gradient, with the same arithmetic (bit for bit; tested).

    torch's version groups tensors, takes per-tensor norms, stacks them and takes their norm; for
    a single tensor that is the same two norms without the bookkeeping (~50 us a step on a CPU).
    """
    total = torch.linalg.vector_norm(torch.linalg.vector_norm(grad).reshape(1))
    grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def batch_indices(n: int, batch: int, g: torch.Generator, device: torch.device):
    """Endless shuffled passes over n points: yields index tensors (last of a pass may be short)."""
    while True:
        perm = torch.randperm(n, generator=g, device=device)
        yield from perm.split(batch)


def loss_fn(model, schedule, x0, t, eps, kl_weight: float) -> torch.Tensor:
    xt = schedule.add_noise(x0, eps, t)  # (B, 2)
    out = model(xt, t).float()  # (B, 2): eps_hat or v_hat
    loss = torch.nn.functional.mse_loss(out, schedule.target(x0, eps, t))
    if kl_weight:
        loss = loss + kl_weight * schedule.vlb_kl(x0, xt, out, t).mean()
    return loss


def make_schedule(config: TrainConfig) -> NoiseSchedule:
    return NoiseSchedule(config.timesteps, beta_end=config.beta_end, schedule=config.beta_schedule,
                         prediction=config.prediction)


def setup(config: TrainConfig, device: torch.device):
    """Seeded model, EMA copy, schedule, data and generator: everything a run starts from."""
    torch.manual_seed(config.seed)  # the parameter init draws from torch's global generator
    model = build_model(config).to(device)
    ema_model = build_model(config).to(device)
    ema_model.load_state_dict(model.state_dict())
    ema_model.requires_grad_(False)
    schedule = make_schedule(config).to(device)
    data = torch.from_numpy(make_dataset(config.dataset, config.n_points)).to(device)
    g = torch.Generator(device=device).manual_seed(config.seed)
    return model, ema_model, schedule, data, g


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


def train(config: TrainConfig, device: str | torch.device = "cpu", every: int | None = None,
          previews: int = 0, cuda_graph: bool | None = None):
    """Train; yield a Progress every `every` steps (default ~200 events per run); return a Trained.

    Use `trained = yield from train(...)`, or fit() when the progress is not wanted.

    previews > 0 adds alpha(t) and a few EMA samples to that many evenly spaced events (their
    cost is left out of `elapsed`). cuda_graph: replay each full-batch step as one CUDA graph
    (default: on CUDA with the hand-written loss); the numbers are the same either way.
    """
    config.validate()
    device = torch.device(device)
    with arithmetic(config.compute_precision, device):  # tf32 on a CPU: refused before any work
        pass
    if device.type == "cpu":
        keep_freed_memory()
    model, ema_model, schedule, data, g = setup(config, device)
    # The plain MSE has a hand-written backward (Denoiser.mse_and_grads) over flat parameters;
    # the VLB term and bf16 autocast go through autograd.
    manual = None if config.kl_weight or config.compute_precision == "bf16" else (
        lambda x0, t, eps: model.mse_and_grads(schedule.add_noise(x0, eps, t), t, schedule.target(x0, eps, t)))
    if manual:
        params = [flatten_(model)]
        ema = Ema(params, [flatten_(ema_model, grad=False)])
    else:
        params, ema = list(model.parameters()), Ema(model.parameters(), ema_model.parameters())
    opt = make_optimizer(params, config, device)

    def step(x0, t, eps):  # loss, gradients, clipping, AdamW: everything per step on the device
        with arithmetic(config.compute_precision, device):
            return _step(x0, t, eps)

    def _step(x0, t, eps):
        if manual:
            loss = manual(x0, t, eps)  # fills every .grad
            clip_norm_(params[0].grad, config.grad_clip)
        else:
            loss = loss_fn(model, schedule, x0, t, eps, config.kl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
        opt.step()
        return loss.detach()

    if cuda_graph is None:
        cuda_graph = device.type == "cuda" and manual is not None and config.steps > 20
    elif cuda_graph and (device.type != "cuda" or manual is None):
        raise ValueError("cuda_graph needs a CUDA device and the plain MSE loss (kl_weight 0)")
    graphed = GraphedStep(step, manual, data, config.batch_size) if cuda_graph else None
    every = every or max(1, config.steps // 200)
    preview_at = set(np.linspace(0, config.steps, previews + 1, dtype=int)[1:]) if previews else set()
    losses = torch.zeros(config.steps, device=device)
    batches = batch_indices(config.n_points, config.batch_size, g, device)
    model.train()
    spent, last, start = 0.0, 0, time.perf_counter()
    for s in range(config.steps):
        idx = next(batches)
        t = torch.randint(0, config.timesteps, (len(idx),), generator=g, device=device)
        eps = torch.randn(len(idx), 2, generator=g, device=device)
        lr = cosine_lr(config.lr, s, config.steps)
        set_lr(opt, lr)
        if graphed is not None and s >= 2 and len(idx) == config.batch_size:  # after AdamW's state exists
            loss = graphed(idx, t, eps)
        else:  # eager: the first steps, a pass's short last batch, CPUs, the autograd (VLB) loss
            loss = step(data[idx], t, eps)
        ema.update(s)
        losses[s] = loss
        done = s + 1
        if done % every == 0 or done == config.steps or done in preview_at:
            mean = losses[last:done].mean().item()  # the one device sync per event
            if not math.isfinite(mean):
                raise TrainingFailed(f"training loss became {mean} at step {done}; try a lower lr")
            elapsed = time.perf_counter() - start - spent
            extra, spent_now = _preview(ema_model, schedule, g, done in preview_at)
            spent += spent_now
            yield Progress(done, config.steps, mean, lr, elapsed, **extra)
            last = done
    training_time = time.perf_counter() - start - spent
    return Trained(model, ema_model, schedule, data, losses.cpu().numpy(), training_time, g, config.compute_precision)


def fit(config: TrainConfig, device: str | torch.device = "cpu", **kw) -> Trained:
    """train() to the end, without its progress events."""
    return drain(train(config, device, **kw))


@torch.inference_mode()
def _preview(ema_model: Denoiser, schedule: NoiseSchedule, g: torch.Generator, wanted: bool):
    """alpha(t) and 300 EMA samples for a live view; costs ~0.1 s on a CPU, so only when asked."""
    if not wanted:
        return {}, 0.0
    t0 = time.perf_counter()
    points, alpha, _ = sample(ema_model, schedule, 300, torch.Generator(g.device).manual_seed(0))
    extra = {"preview": tuple(map(tuple, points.round(3).tolist()))}
    if alpha is not None:
        extra["alpha"] = tuple(round(a, 5) for a in alpha.tolist())
    return extra, time.perf_counter() - t0
