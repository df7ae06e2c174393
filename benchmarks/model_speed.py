"""Speed of the readable model (dualscale/model.py, autograd) against the fast path the trainer uses
(dualscale/models.py: hand-written backward into one flat parameter tensor), in one process.

    python benchmarks/model_speed.py [--steps 300] [--repeats 5] [--threads N]

One training step, as train.py does it on a CPU, at batch 256 in fp32: add the noise, forward,
backward, clip the gradient norm to 0.5, fused AdamW. Plain: loss_fn + loss.backward() +
clip_grad_norm_ (the trainer's autograd path); fast: Denoiser.mse_and_grads + clip_rows_ on the flat
gradient. Both start from the same weights and see the same pre-drawn batches (drawing batches and
the EMA are left out: they cost both the same). Each round times --steps steps of each, A and B
alternating which goes first; the medians over rounds and the median of the per-round ratios are
printed, with bare float32 matmuls of the same shapes (benchmarks/speed.py) as the reference rate.
Compare only numbers from one run: other processes on the machine move them all.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from dualscale.config import TrainConfig  # noqa: E402
from dualscale.data import make_dataset  # noqa: E402
from dualscale.model import plain_from_fast  # noqa: E402
from dualscale.models import build_model  # noqa: E402
from dualscale.system import keep_freed_memory  # noqa: E402
from dualscale.train import clip_rows_, flatten_, loss_fn, make_optimizer, make_schedule  # noqa: E402
from speed import GFLOP_PER_STEP, matmul_gflops, med  # noqa: E402  (benchmarks/speed.py)

CPU = torch.device("cpu")
VARIANTS = ("baseline", "adaptive")


def steps_for(config: TrainConfig) -> dict:
    """{"plain": step, "fast": step}: step(x0, t, eps) -> loss, one full training step each, same weights."""
    torch.manual_seed(config.seed)
    fast = build_model(config)
    plain = plain_from_fast(fast)
    schedule = make_schedule(config)
    flat = flatten_(fast)
    fast_opt = make_optimizer([flat], config, CPU)
    params = list(plain.parameters())
    plain_opt = make_optimizer(params, config, CPU)

    def fast_step(x0, t, eps):  # train.py's CPU step with the hand-written backward
        loss = fast.mse_and_grads(schedule.add_noise(x0, eps, t), t, schedule.target(x0, eps, t))
        clip_rows_(flat.grad[None], config.grad_clip)
        fast_opt.step()
        return loss

    def plain_step(x0, t, eps):  # train.py's autograd step, on the readable model
        loss = loss_fn(plain, schedule, x0, t, eps, 0.0)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
        plain_opt.step()
        return loss.detach()

    return {"plain": plain_step, "fast": fast_step}


def draw_batches(config: TrainConfig, n: int = 64) -> list:
    """n batches (x0, t, eps) drawn once, reused in turn by every timed block."""
    data = torch.from_numpy(make_dataset(config.dataset, 10_000))
    g = torch.Generator().manual_seed(config.seed)
    return [(data[torch.randint(0, len(data), (config.batch_size,), generator=g)],
             torch.randint(0, config.timesteps, (config.batch_size,), generator=g),
             torch.randn(config.batch_size, 2, generator=g)) for _ in range(n)]


def block_ms(step, batches: list, n: int) -> float:
    """ms per step over n steps."""
    t0 = time.perf_counter()
    for i in range(n):
        step(*batches[i % len(batches)])
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="rounds (one block of each path per variant)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    keep_freed_memory()  # as train() does on a CPU
    print(f"torch {torch.__version__}, cpu, threads {torch.get_num_threads()}, batch 256, fp32, "
          f"{a.repeats} rounds x {a.steps} steps")
    bare = {k: statistics.median(matmul_gflops("cpu", 256, k, max(2, a.repeats))) for k in (1, 2)}
    for k, rate in bare.items():
        print(f"bare matmul, {'baseline' if k == 1 else 'dual-scale'} shapes: {rate:7.1f} GFLOP/s")
    setups = {}
    for variant in VARIANTS:
        config = TrainConfig(variant=variant)
        steps, batches = steps_for(config), draw_batches(config)
        first = {name: step(*batches[0]).item() for name, step in steps.items()}  # same weights, same batch
        if abs(first["plain"] - first["fast"]) > 1e-5 * abs(first["fast"]):
            raise SystemExit(f"{variant}: the two paths disagree ({first}); fix that before timing them")
        for step in steps.values():  # warm-up: allocator, AdamW state, thread pool
            block_ms(step, batches, min(a.steps, 30))
        setups[variant] = steps, batches
    ms = {(v, name): [] for v in VARIANTS for name in ("plain", "fast")}
    for r in range(a.repeats):
        for variant, (steps, batches) in setups.items():
            for name in (("plain", "fast") if r % 2 == 0 else ("fast", "plain")):
                ms[variant, name].append(block_ms(steps[name], batches, a.steps))
    for variant in VARIANTS:
        plain, fast = ms[variant, "plain"], ms[variant, "fast"]
        ratio = statistics.median(x / y for x, y in zip(plain, fast))
        matmul = bare[1 if variant == "baseline" else 2]
        print(f"{variant:8s} ms/step  plain {med(plain)}  fast {med(fast)}  plain/fast {ratio:.2f}")
        for name, xs in (("plain", plain), ("fast", fast)):
            rate = GFLOP_PER_STEP[variant] / statistics.median(xs) * 1000
            print(f"{'':8s} {name:5s} {rate:6.1f} GFLOP/s = {rate / matmul:.0%} of the bare matmul rate")


if __name__ == "__main__":
    main()
