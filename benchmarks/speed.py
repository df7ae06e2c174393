"""Speed of the engine against a plain matmul of the same shapes, measured in one run.

    python benchmarks/speed.py [--device cpu|cuda] [--threads N] [--repeats 5] [--quick]

Prints medians (and min-max) of: ms per training step at batch 256 for each variant (with
batch drawing, clipping, AdamW, EMA: the real loop), sampling 10,000 points x 100 steps, the
eval-loss pass over 100,000 points, and the GFLOP/s of bare matmuls of the model's shapes, so
the ratio says how much of a step is arithmetic and how much is overhead. Against the reference
loop timed in the same run: benchmarks/reference_loop.py. FLOP counts are the
reference's (one baseline step 0.45 GFLOP, one adaptive step 0.97 GFLOP, forward + backward).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dualscale.config import TrainConfig  # noqa: E402
from dualscale.diffusion import sample  # noqa: E402
from dualscale.evaluate import eval_losses  # noqa: E402
from dualscale.system import synchronize  # noqa: E402
from dualscale.train import fit, train  # noqa: E402

GFLOP_PER_STEP = {"baseline": 0.45, "fixed": 0.97, "adaptive": 0.97}  # reference.md


def med(xs):
    return f"{statistics.median(xs):8.3f} (min {min(xs):.3f}, max {max(xs):.3f})"


def step_ms(variant: str, device: str, block: int, repeats: int, precision: str = "fp32") -> list[float]:
    """ms per step over `repeats` blocks of `block` steps, after a warm-up block."""
    cfg = TrainConfig(dataset="dino", variant=variant, steps=block * (repeats + 1), compute_precision=precision)
    elapsed = [e.elapsed for e in train(cfg, device, every=block)]
    return [(b - a) / block * 1000 for a, b in zip(elapsed[:-1], elapsed[1:])]


def trained_state(variant: str, device: str):
    """A briefly trained model (sampling cost does not depend on the weights' values)."""
    cfg = TrainConfig(dataset="dino", variant=variant, steps=20, n_points=2048)
    return fit(cfg, device)


def sampling_s(done, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        synchronize(done.data.device)
        t0 = time.perf_counter()
        sample(done.emas[0], done.schedule, 10_000, torch.Generator(done.data.device).manual_seed(i))
        synchronize(done.data.device)
        out.append(time.perf_counter() - t0)
    return out


def eval_s(done, repeats: int, device: str) -> list[float]:
    data = torch.randn(100_000, 2, device=device)
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        eval_losses(done.forward("online"), done.schedule, data[None], [torch.Generator(device).manual_seed(i)])
        out.append(time.perf_counter() - t0)
    return out


def matmul_gflops(device: str, batch: int, k: int, repeats: int) -> list[float]:
    """GFLOP/s of bare batched matmuls with one step's shapes: forward, grad-input, grad-weight."""
    a = torch.randn(k, batch, 256, device=device)
    w = torch.randn(k, 256, 256, device=device)
    w_in = torch.randn(k, 256, 256, device=device)
    flop = 2 * k * batch * 256 * 256 * 4 * 3  # 4 square layers x (fwd, dgrad, wgrad)
    out = []
    for _ in range(repeats + 1):
        synchronize(torch.device(device))
        t0 = time.perf_counter()
        for _ in range(50):
            for m in (w_in, w, w, w):
                h = torch.bmm(a, m)
                torch.bmm(h, m.transpose(1, 2))
                torch.bmm(a.transpose(1, 2), h)
        synchronize(torch.device(device))
        out.append(flop * 50 / (time.perf_counter() - t0) / 1e9)
    return out[1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--block", type=int, default=200, help="training steps per timed block")
    p.add_argument("--quick", action="store_true", help="fewer, shorter blocks (a smoke run)")
    p.add_argument("--precision", nargs="*", default=[], choices=("tf32", "bf16"),
                   help="also time the adaptive step in these precisions, against fp32 in the same run")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core); "
                   "reproduce runs one single-threaded run per core, so --threads 1 is its speed")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.repeats, a.block = 2, 50
    print(f"torch {torch.__version__}, device {a.device}, threads {torch.get_num_threads()}")
    bare = {}
    for k, name in ((1, "baseline"), (2, "dual")):
        rates = matmul_gflops(a.device, 256, k, a.repeats)
        bare[name] = statistics.median(rates)
        print(f"bare matmul GFLOP/s, {name} shapes (batch 256): {med(rates)}")
    for variant in ("baseline", "fixed", "adaptive"):
        ms = step_ms(variant, a.device, a.block, a.repeats)
        m = statistics.median(ms)
        rate = GFLOP_PER_STEP[variant] / m * 1000
        matmul = bare["baseline" if variant == "baseline" else "dual"]
        print(f"train {variant:8s} ms/step {med(ms)}  = {rate:6.1f} GFLOP/s ({rate / matmul:.0%} of the bare"
              f" matmul rate)")
    for precision in a.precision:
        fp32 = statistics.median(step_ms("adaptive", a.device, a.block, a.repeats))
        ms = step_ms("adaptive", a.device, a.block, a.repeats, precision)
        print(f"train adaptive {precision} ms/step {med(ms)}  vs fp32 {fp32:.3f} in this run: "
              f"{fp32 / statistics.median(ms):.2f}x")
    for variant in ("baseline", "adaptive"):
        done = trained_state(variant, a.device)
        s = sampling_s(done, max(2, a.repeats // 2))
        print(f"sample {variant:8s} 10k x 100 s {med(s)}")
        print(f"eval-loss {variant:8s} 100k pts s {med(eval_s(done, max(2, a.repeats // 2), a.device))}")


if __name__ == "__main__":
    main()
