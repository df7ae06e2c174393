"""How launch-bound a training step is on a GPU: wall time per step against GPU kernel time.

    python benchmarks/launch_bound.py [--steps 300]

For each variant: median wall ms per step (the real loop, synchronised), the GPU's kernel time
per step from torch.profiler, kernels launched per step, and busy = kernel time / wall time.
A busy fraction far below 1 means the step waits on the CPU launching kernels, not on the GPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
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
        cfg = TrainConfig(dataset="dino", variant=variant, steps=a.steps)
        block = 50
        stamps = []
        it = train(cfg, "cuda", every=block)
        for ev in it:  # each event syncs (loss.item()), so elapsed marks finished steps
            if hasattr(ev, "elapsed"):
                stamps.append(ev.elapsed)
        ms = [(y - x) / block * 1000 for x, y in zip(stamps[1:-1], stamps[2:])]
        prof_steps = 50
        cfg_p = TrainConfig(dataset="dino", variant=variant, steps=prof_steps + 20)
        it = train(cfg_p, "cuda", every=10)
        for _ in range(2):  # warm-up events (20 steps)
            next(it)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for ev in it:
                if not hasattr(ev, "elapsed"):
                    break
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / prof_steps * 1000
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu_ms = sum(e.device_time for e in kernels) / 1000 / prof_steps
        print(f"{variant:8s} wall {statistics.median(ms):6.3f} ms/step (min {min(ms):.3f}), "
              f"GPU kernels {gpu_ms:6.3f} ms/step, {len(kernels) / prof_steps:5.1f} kernels/step, "
              f"busy {gpu_ms / statistics.median(ms):5.1%} (profiled wall {wall:.3f} ms/step)")


if __name__ == "__main__":
    main()
