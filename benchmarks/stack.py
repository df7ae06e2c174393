"""The stacked training step against the bare matmuls of the same shapes.

For K runs stacked (the paper's 12 runs = 20 branches; 10 seeds of them = 200 branches), time
  - the real stacked step (train.train over many configs: every run's draws, vmapped forward + backward,
    per-run clipping, fused AdamW; on a GPU one CUDA graph per step, draws included; then EMA
    and lr outside), as ms per step;
  - the bare matmuls of that step: per branch, the 4 (B, 256) x (256, 256) products of the
    forward and the 8 of the backward, as 12 batched matmuls over all branches;
and print the medians and their ratio (the stacked step's share of the bare-matmul rate).

    python benchmarks/stack.py [--device cuda] [--seeds 1 10] [--steps 400] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dualscale.config import VARIANTS, TrainConfig  # noqa: E402
from dualscale.data import PAPER_DATASETS  # noqa: E402
from dualscale.train import train  # noqa: E402
from dualscale.system import resolve_device, synchronize  # noqa: E402


def stacked_ms(configs, device, steps: int, chunk: int = 50) -> float:
    """Median ms per step over chunks of `chunk` steps in the second half of a run of `steps` steps
    (after the capture and warm-up); train syncs once per chunk, as a real run does."""
    stamps = []
    gen = train([TrainConfig(**{**c.to_dict(), "steps": steps}) for c in configs], device, every=chunk)
    for _ in gen:
        stamps.append(time.perf_counter())
    half = stamps[len(stamps) // 2:]
    return 1e3 * statistics.median(b - a for a, b in zip(half, half[1:])) / chunk


def bare_ms(branches: int, batch: int, device, repeats: int = 50) -> float:
    """12 batched (K, B, 256) x (K, 256, 256)-shaped products, as in one step's forward and backward."""
    x = torch.randn(branches, batch, 256, device=device)
    w = torch.randn(branches, 256, 256, device=device)

    def products():
        for _ in range(4):
            torch.bmm(x, w)                      # forward
            torch.bmm(x, w.transpose(1, 2))      # backward: input gradient
            torch.bmm(x.transpose(1, 2), x)      # backward: weight gradient
    products()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        products()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 10], help="seeds per run: 1 = the paper's 12 runs")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    device = resolve_device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    print(f"{'runs':>5s} {'branches':>8s} {'stacked ms/step':>16s} {'bare matmul ms':>15s} {'share':>6s}")
    for seeds in a.seeds:
        configs = [TrainConfig(dataset=d, variant=v, seed=s) for s in range(seeds)
                   for d in PAPER_DATASETS for v in VARIANTS]
        branches = sum(1 if c.variant == "baseline" else 2 for c in configs)
        step = statistics.median(stacked_ms(configs, device, a.steps) for _ in range(a.repeats))
        bare = statistics.median(bare_ms(branches, 256, device) for _ in range(a.repeats))
        print(f"{len(configs):5d} {branches:8d} {step:16.3f} {bare:15.3f} {bare / step:6.1%}")


if __name__ == "__main__":
    main()
