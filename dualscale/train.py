"""The engine's training half: any number of runs trained together, a single run being one row.

    groups = yield from train(configs, device)   # yields Progress; returns [Runs], one per group
    runs = fit(config, device)                   # one config, no events: a Runs with one row

Same math as the reference: shuffled passes over the points in batches of 256, t ~ U{0..T-1},
MSE on eps (+ lambda * VLB KL), AdamW, global grad-norm clip, cosine lr to 0, EMA with warm-up.

Runs whose settings agree but for dataset and seed form a group (Runs): their parameters,
gradients, AdamW state and EMA are the rows of (R, P) tensors, and each row's model (models.py)
sees its row through views. What stays per run, exactly as if it trained alone: the seeded init,
its generator and the order of its draws (batch indices, t, noise; evaluate.py draws on from it),
the clipping of its own gradient norm, its lr schedule and EMA. A step's gradient comes one of two
ways, the same math:
  - row by row, from the hand-written backward (models.Denoiser.mse_and_grads): on a CPU, and for
    a single run anywhere (the plain MSE in fp32; `benchmarks/model_speed.py` shows what it pays);
  - all rows at once, autograd vmapped over the runs (torch.func): several runs on a GPU, where a
    run alone leaves the card idle, and the VLB or bf16 losses.
Groups that share steps, batch and data size train in one loop (a stack); on CUDA that loop's
step, every run's draws included, is replayed as one CUDA graph.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from .config import TrainConfig
from .data import make_dataset
from .diffusion import NoiseSchedule, rows_forward, sample
from .events import Progress, TrainingFailed, drain
from .models import build_model
from .system import arithmetic, keep_freed_memory, synchronize

PER_RUN = ("dataset", "seed")  # what may differ inside a group; every other setting is shared


def group_key(config: TrainConfig) -> tuple:
    return tuple((k, v) for k, v in config.to_dict().items() if k not in PER_RUN)


def stack_key(config: TrainConfig) -> tuple:
    """Groups with this key train in one loop: the step count, batch and data size line up."""
    return config.steps, config.batch_size, config.n_points


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


def cosine_lr(peak: float, step: int, total: int) -> float:
    """torch's CosineAnnealingLR(T_max=total, eta_min=0) in closed form, for 0-based `step`."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / total))


def make_optimizer(params: list, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; fused=True is one kernel for all parameters (CPU and CUDA), identical AdamW math.

    On CUDA the lr is a tensor on the GPU and the optimizer is capturable, so that a step can be
    replayed as a CUDA graph while the cosine schedule still moves the lr.
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


def clip_rows_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for each row of (R, P) gradients, its own norm, with torch's arithmetic for
    one tensor (bit for bit; tested): the norm of the one-element vector of per-tensor norms. Each
    row's norm is taken alone, so that it adds in the order it would for the run alone (a reduction
    over (R, P) splits the work across threads differently). Returns the norms before clipping, (R, 1)."""
    total = torch.stack([torch.linalg.vector_norm(torch.linalg.vector_norm(row).reshape(1)) for row in grad])[:, None]
    grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def loss_fn(model, schedule, x0, t, eps, kl_weight: float) -> torch.Tensor:
    """The training loss with autograd: model(xt, t) -> eps_hat (or v_hat); MSE (+ lambda VLB KL)."""
    xt = schedule.add_noise(x0, eps, t)  # (B, 2)
    out = model(xt, t).float()  # (B, 2): float, as bf16 autocast stays inside the net
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
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    if grad:
        flat.requires_grad_()
        flat.grad = torch.zeros_like(flat)
    view_parameters_(model, flat.detach(), flat.grad)
    return flat


def view_parameters_(model: torch.nn.Module, flat: torch.Tensor, flat_grad: torch.Tensor | None = None) -> None:
    """Make each parameter of `model` a view of its slice of `flat` (P,), and its .grad one of `flat_grad`."""
    offset = 0
    for p in model.parameters():
        n = p.numel()
        p.data = flat[offset:offset + n].view_as(p)
        if flat_grad is not None:
            p.grad = flat_grad[offset:offset + n].view_as(p)
        offset += n


class Runs:
    """R runs of one variant and settings. Row i: configs[i], models[i] (online) and emas[i] (EMA),
    whose parameters are views of row i of `flat` and `ema_flat`, gens[i], data[i], losses[i]."""

    def __init__(self, configs: list[TrainConfig], device: torch.device, batched: bool | None = None):
        """batched: vmap the runs (default: several runs on an accelerator); else row by row."""
        self.configs, self.device = configs, device
        c = configs[0]
        runs = [setup(cfg, device) for cfg in configs]  # each seeded exactly as if alone
        self.models = [r[0] for r in runs]
        self.emas = [r[1] for r in runs]
        self.template, self.schedule = runs[0][0], runs[0][2]
        self.data = torch.stack([r[3] for r in runs])  # (R, n, 2)
        self.gens = [r[4] for r in runs]
        self.names = [n for n, _ in self.template.named_parameters()]
        self.size = sum(p.numel() for p in self.template.parameters())  # P
        # (R, P) in rows padded to a multiple of 16 floats: every row starts 64-byte aligned, as a run's
        # own tensor would, so that its kernels (BLAS picks its path by alignment) compute what they
        # would for the run alone. The padding stays 0 (no gradient; AdamW keeps 0 at 0).
        self.flat = torch.zeros(len(configs), -(-self.size // 16) * 16, device=device)
        for row, m in zip(self.flat, self.models):
            row[:self.size] = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
        self.flat.grad = torch.zeros_like(self.flat)
        self.ema_flat = self.flat.clone()
        for i in range(len(configs)):
            view_parameters_(self.models[i], self.flat[i], self.flat.grad[i])
            view_parameters_(self.emas[i], self.ema_flat[i])
        self.params = self._views(self.flat)
        self.ema_params = self._views(self.ema_flat)
        # several runs on an accelerator: one vmapped forward/backward; otherwise row by row
        self.batched = len(configs) > 1 and device.type != "cpu" if batched is None else batched
        self.manual = not self.batched and not c.kl_weight and c.compute_precision != "bf16"
        self.grads = vmap(grad_and_value(self._loss))
        self.opt = make_optimizer([self.flat], c, device)
        self.ema = Ema([self.flat], [self.ema_flat])
        # Each run's shuffled pass over its points (drawn from its generator, kept on the device): rows
        # of perm, the next batch starting at pos. A captured step reads and advances pos itself.
        self.perm = torch.empty(len(configs), c.n_points, dtype=torch.long, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.offsets = torch.arange(c.batch_size, device=device)
        self.rows = torch.arange(len(configs), device=device)[:, None]
        self.losses = torch.zeros(len(configs), c.steps, device=device)
        self.training_time = 0.0  # seconds of the loop this group trained in (a stack's wall time)

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, p in self.template.named_parameters():
            out[name] = flat[:, offset:offset + p.numel()].view(len(flat), *p.shape)
            offset += p.numel()
        return out

    def _loss(self, params, x0, t, eps):
        """One run's training loss (vmapped over the runs)."""
        return loss_fn(lambda xt, tt: functional_call(self.template, params, (xt, tt)), self.schedule,
                       x0, t, eps, self.configs[0].kl_weight)

    def new_pass(self) -> None:
        """Each run's next shuffled pass over its points."""
        for row, g in zip(self.perm, self.gens):
            row.copy_(torch.randperm(len(row), generator=g, device=self.device))
        self.pos.zero_()

    def draw(self, size: int):
        """Each run's batch, t and noise, from its own generator. Only device work (no host sync),
        so that a CUDA graph can capture it with the step."""
        c = self.configs[0]
        idx = self.perm[:, self.pos + self.offsets[:size]]  # (R, size): the pass's next slice
        self.pos.add_(size)
        t = torch.stack([torch.randint(0, c.timesteps, (size,), generator=g, device=self.device) for g in self.gens])
        eps = torch.stack([torch.randn(size, 2, generator=g, device=self.device) for g in self.gens])
        return idx, t, eps

    def step(self, idx, t, eps, warmup: bool = False) -> torch.Tensor:
        """Loss and gradients, each run's own clipping, AdamW for every run; -> losses (R,).
        warmup: the same kernels without the update (before a CUDA graph's capture)."""
        c, s = self.configs[0], self.schedule
        x0 = self.data[self.rows, idx]  # (R, B, 2)
        with arithmetic(c.compute_precision, self.device):
            if self.manual:  # fills each row's .grad
                loss = torch.stack([m.mse_and_grads(s.add_noise(x0[i], eps[i], t[i]), t[i], s.target(x0[i], eps[i], t[i]))
                                    for i, m in enumerate(self.models)])
            else:
                grads, loss = self.grads(self.params, x0, t, eps)
                self.flat.grad[:, :self.size].copy_(torch.cat([grads[n].reshape(len(self.configs), -1) for n in self.names], 1))
        if not warmup:
            clip_rows_(self.flat.grad[:, :self.size], c.grad_clip)
            self.opt.step()
        return loss.detach()

    def round_to_half(self) -> None:
        """Round every weight through float16, so metrics describe exactly what a half-precision store keeps."""
        self.flat.copy_(self.flat.half().float())
        self.ema_flat.copy_(self.ema_flat.half().float())

    def weights(self, i: int) -> dict:
        """Run i's weights as the store keeps them: {"online": state_dict, "ema": state_dict}."""
        return {"online": self.models[i].state_dict(), "ema": self.emas[i].state_dict()}

    def forward(self, which: str = "ema"):
        """Every run's network at fixed weights: f(x (R, N, 2), t (R, N) or one int) -> (R, N, 2).

        Row by row, each model with its timestep tables computed once (models.Denoiser.tables);
        vmapped for several runs on an accelerator (under enable_grad, the models' out-of-place
        path: vmap has no batching rule for their in-place one; nothing requires grad, so no graph)."""
        if self.batched:
            params = self.ema_params if which == "ema" else self.params

            def batched(x, t):
                with torch.enable_grad():
                    if isinstance(t, int):
                        return vmap(lambda p, xx: functional_call(self.template, p, (xx, t)))(params, x)
                    return vmap(lambda p, xx, tt: functional_call(self.template, p, (xx, tt)))(params, x, t)
            return batched
        return rows_forward(self.emas if which == "ema" else self.models)


class DrawsDiffer(RuntimeError):
    pass


class _Graphed:
    """The whole stack's full-batch step as one CUDA graph, every run's draws included: one launch
    instead of ~100 per group (benchmarks/launch_bound.py: a single run keeps an H200 busy 13-27%
    of an eager step; graphed, 4.6-5.7x faster per step).

    Each run's generator is registered with the graph, so a replay draws from it exactly what the
    eager step would (torch keeps the philox offsets of a captured region; see CUDAGeneratorImpl's
    "CUDA Graph-safe RNG states"). Before the first real replay this is checked: one replay on a
    copy of the state, its draws compared with eager draws from twins of the generators, and the
    state put back. Draws that differ raise DrawsDiffer and the caller steps eagerly.
    """

    def __init__(self, groups: list[Runs], batch: int):
        dev = groups[0].device
        self.graph = torch.cuda.CUDAGraph()
        if not hasattr(self.graph, "register_generator_state"):  # torch < 2.5
            raise RuntimeError("this torch cannot register generators with a CUDA graph")
        for g in groups:
            for gen in g.gens:
                self.graph.register_generator_state(gen)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for g in groups:  # cuBLAS and autograd set up outside the capture, nothing drawn or updated
                zeros = torch.zeros(len(g.configs), batch, dtype=torch.long, device=dev)
                g.step(zeros, zeros, torch.zeros(len(g.configs), batch, 2, device=dev), warmup=True)
            with torch.cuda.graph(self.graph, stream=side):
                self.draws = [g.draw(batch) for g in groups]
                self.out = [g.step(*d) for g, d in zip(groups, self.draws)]
        torch.cuda.current_stream(dev).wait_stream(side)
        check_draws(groups, batch, lambda: (self.graph.replay(), self.draws)[1])

    def __call__(self) -> list[torch.Tensor]:
        self.graph.replay()
        return self.out


def check_draws(groups: list[Runs], b: int, replay) -> None:
    """Run replay() (one full-batch step of every run, returning the [(idx, t, eps)] it drew) on a
    copy of the state; raise DrawsDiffer unless its draws equal eager draws from twins of the
    generators. The parameters, optimizer state, pass positions and generators are put back."""
    dev = groups[0].device
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


def make_groups(configs: list[TrainConfig], device: torch.device, batched: bool | None = None) -> list[Runs]:
    """The configs as groups (Runs) of one stack; a ValueError unless they share steps, batch and data size."""
    if len({stack_key(c) for c in configs}) != 1:
        raise ValueError("a stack needs one step count, batch size and n_points; split the configs with stack_key")
    by_group: dict[tuple, list[TrainConfig]] = {}
    for c in configs:
        by_group.setdefault(group_key(c), []).append(c)
    return [Runs(cs, device, batched) for cs in by_group.values()]


def train(configs: TrainConfig | list[TrainConfig], device: str | torch.device = "cpu", every: int | None = None,
          previews: int = 0, cuda_graph: bool | None = None, batched: bool | None = None):
    """Train configs (one, or a stack of them); yield a Progress every `every` steps (default ~200
    events) with the mean loss over the runs; return [Runs], one per group, each with its
    training_time (the loop's seconds, previews left out). `groups = yield from train(...)`.

    previews > 0 adds the first run's alpha(t) and a few EMA samples to that many evenly spaced
    events. cuda_graph: replay each full-batch step as one CUDA graph (default: on CUDA); the
    numbers are the same either way. batched: see Runs.
    """
    configs = [configs] if isinstance(configs, TrainConfig) else list(configs)
    device = torch.device(device)
    for c in configs:
        c.validate()
        with arithmetic(c.compute_precision, device):  # tf32 on a CPU: refused before any work
            pass
    if cuda_graph and device.type != "cuda":
        raise ValueError("cuda_graph needs a CUDA device")
    if device.type == "cpu":
        keep_freed_memory()
    groups = make_groups(configs, device, batched)
    c = configs[0]
    cuda_graph = device.type == "cuda" and c.steps > 20 if cuda_graph is None else cuda_graph
    every = every or max(1, c.steps // 200)
    preview_at = set(np.linspace(0, c.steps, previews + 1, dtype=int)[1:]) if previews else set()
    per_pass = math.ceil(c.n_points / c.batch_size)  # the last batch of a pass may be short
    graphed, last, spent = None, 0, 0.0
    synchronize(device)
    start = time.perf_counter()
    for s in range(c.steps):
        for g in groups:
            set_lr(g.opt, cosine_lr(g.configs[0].lr, s, c.steps))
        if s % per_pass == 0:
            for g in groups:
                g.new_pass()
        size = min(c.batch_size, c.n_points - (s % per_pass) * c.batch_size)
        if cuda_graph and s >= 2 and size == c.batch_size:  # after AdamW's state exists
            try:
                graphed = graphed or _Graphed(groups, size)
                losses = graphed()
            except RuntimeError as e:  # a capture this torch cannot do, or draws that differ: step eagerly
                warnings.warn(f"step not captured as a CUDA graph ({str(e).splitlines()[0]}); running eagerly")
                cuda_graph, graphed = False, None
                losses = [g.step(*g.draw(size)) for g in groups]
        else:
            losses = [g.step(*g.draw(size)) for g in groups]
        for g, loss in zip(groups, losses):
            g.ema.update(s)
            g.losses[:, s] = loss
        done = s + 1
        if done % every == 0 or done == c.steps or done in preview_at:
            mean = torch.cat([g.losses[:, last:done].mean(1) for g in groups]).mean().item()  # the one sync per event
            if not math.isfinite(mean):
                bad = [cfg.run_id for g in groups for cfg, v in zip(g.configs, g.losses[:, last:done].mean(1).tolist())
                       if not math.isfinite(v)]
                where = f" in {', '.join(bad)}" if len(configs) > 1 else ""
                raise TrainingFailed(f"training loss became {mean} at step {done}{where}; try a lower lr")
            extra, spent_now = _preview(groups[0], done in preview_at)
            spent += spent_now
            yield Progress(done, c.steps, mean, cosine_lr(c.lr, s, c.steps), time.perf_counter() - start - spent, **extra)
            last = done
    synchronize(device)
    for g in groups:
        g.training_time = time.perf_counter() - start - spent
    return groups


def fit(config: TrainConfig, device: str | torch.device = "cpu", **kw) -> Runs:
    """One config trained to the end, without its progress events: a Runs of one row."""
    return drain(train(config, device, **kw))[0]


@torch.inference_mode()
def _preview(runs: Runs, wanted: bool):
    """The first run's alpha(t) and 300 EMA samples for a live view; ~0.1 s on a CPU, so only when asked."""
    if not wanted:
        return {}, 0.0
    t0 = time.perf_counter()
    points, alpha, _ = sample(runs.emas[0], runs.schedule, 300, torch.Generator(runs.device).manual_seed(0))
    extra = {"preview": tuple(map(tuple, points.round(3).tolist()))}
    if alpha is not None:
        extra["alpha"] = tuple(round(a, 5) for a in alpha.tolist())
    return extra, time.perf_counter() - t0

