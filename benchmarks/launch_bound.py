"""How launch-bound a training step is on a GPU: wall time per step against GPU kernel time.

    python benchmarks/launch_bound.py [--steps 300]

For each variant: median wall ms per step (the real loop, synchronised) with eager steps and
with each step replayed as a CUDA graph (train's default on CUDA), the GPU's kernel time per
eager step from torch.profiler, kernels launched per eager step, and busy = kernel time / wall
time. A busy fraction far below 1 means the step waits on the CPU launching kernels.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dualscale.config import TrainConfig  # noqa: E402
from dualscale.train import train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here; this benchmark measures GPU launch overhead")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for variant in ("baseline", "fixed", "adaptive"):
        walls = {graph: wall_ms(variant, a.steps, graph) for graph in (False, True)}
        prof_steps = 50
        cfg_p = TrainConfig(dataset="dino", variant=variant, steps=prof_steps + 20)
        it = train(cfg_p, "cuda", every=10, cuda_graph=False)
        for _ in range(2):  # warm-up events (20 steps)
            next(it)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            for _ in it:  # the remaining events; the generator ends with the run
                pass
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu_ms = sum(e.device_time for e in kernels) / 1000 / prof_steps
        print(f"{variant:8s} eager {walls[False]:6.3f} ms/step, graphed {walls[True]:6.3f} ms/step "
              f"({walls[False] / walls[True]:.2f}x); GPU kernels {gpu_ms:6.3f} ms/step, "
              f"{len(kernels) / prof_steps:5.1f} kernels/step; busy {gpu_ms / walls[False]:5.1%} eager, "
              f"{gpu_ms / walls[True]:5.1%} graphed")


def wall_ms(variant: str, steps: int, graph: bool, block: int = 50) -> float:
    """Median ms per step over blocks of `block` steps, the first block (warm-up, capture) left out."""
    # each event syncs (loss.item()), so elapsed marks finished steps
    stamps = [ev.elapsed for ev in train(TrainConfig(dataset="dino", variant=variant, steps=steps), "cuda",
                                         every=block, cuda_graph=graph)]
    return statistics.median((y - x) / block * 1000 for x, y in zip(stamps[1:-1], stamps[2:]))


if __name__ == "__main__":
    main()
