"""The reference experiment's loop, rebuilt from shared/reference.md, timed beside dualscale in one run.

    python benchmarks/reference_loop.py [--steps 600] [--repeats 3] [--sweep-steps 1000] [--no-sweep]

The reference loop (written here from the reference's description, not copied): a DataLoader
(batch 256, shuffled) over the 100,000 points of a TensorDataset; the plain model of
dualscale/model.py (the reference's networks: embeddings per sample, autograd); MSE on the noise;
loss.backward(); clip_grad_norm_(0.5); torch's default AdamW (lr 3e-4, weight decay 0.01);
CosineAnnealingLR; the EMA as an AveragedModel with the reference's warm-up, updated every 10
steps. Its sampler: 10,000 points in one batch, t = 99..0, the model called with a tensor of t,
the batch mean of alpha recorded at each step. Ours: dualscale.train.train and
dualscale.diffusion.sample, at the package's defaults.

Each measurement runs in a fresh process with its own thread count (1 and 2) and environment (the
reference's: torch's defaults; ours: the package's thread policy), A and B interleaved over
--repeats rounds. Printed: medians (min-max), each side at its best thread count, the ratio
reference / ours. The sweep: `python -m dualscale reproduce` of 4 runs (dino and moons, baseline
and adaptive, --sweep-steps steps, evaluation included, default jobs) against the same 4
reference runs (train, eval loss, sampling, KL) two at a time with one thread each, wall time.
Run it on a quiet machine: other processes move every number.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBGOMP_DEFAULT = "300000"  # libgomp's spin count when no wait policy is set (its manual)
SWEEP = [("dino", "baseline"), ("dino", "adaptive"), ("moons", "baseline"), ("moons", "adaptive")]


# ---- the reference, rebuilt (runs in a worker process) ----

def reference_run(dataset: str, variant: str, steps: int, threads: int, time_steps: int = 0, evaluate: bool = False):
    """Train as the reference does; -> ms per step over the last `time_steps` steps (0: all), and with
    evaluate, the reference's evaluation (eval loss pass, 10,000 samples, KL) too."""
    import torch
    from torch.optim.swa_utils import AveragedModel

    from dualscale.data import make_dataset
    from dualscale.diffusion import NoiseSchedule
    from dualscale.model import Denoiser

    torch.set_num_threads(threads)
    data = torch.from_numpy(make_dataset(dataset, 100_000))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=256, shuffle=True, drop_last=False)
    model = Denoiser(variant)
    sched = NoiseSchedule(100)

    def warmup_ema(avg, cur, num):  # the reference's EMA with its warm-up (reference.md)
        s = int(num) * 10
        if s <= 110:
            return [c.detach().clone() for c in cur]
        d = min(0.995, 1.0 - (1.0 + s - 100) ** (-2.0 / 3.0))
        return [a + (1 - d) * (c - a) for a, c in zip(avg, cur)]

    ema = AveragedModel(model, multi_avg_fn=lambda a, c, n: [x.copy_(y) for x, y in zip(a, warmup_ema(a, c, n))])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    s, start, mark = 0, time.perf_counter(), None
    while s < steps:
        for (x0,) in loader:
            if s == steps - time_steps:
                mark = time.perf_counter()
            t = torch.randint(0, 100, (len(x0),))
            eps = torch.randn_like(x0)
            loss = torch.nn.functional.mse_loss(model(sched.add_noise(x0, eps, t), t), eps)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            lr.step()
            if s % 10 == 0:
                ema.update_parameters(model)
            s += 1
            if s == steps:
                break
    end = time.perf_counter()
    out = {"ms_per_step": (end - (mark or start)) / (time_steps or steps) * 1000}
    if evaluate:
        from dualscale.metrics import kl_divergence

        model.eval()
        with torch.no_grad():
            losses = []
            for (x0,) in torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=256):
                t = torch.randint(0, 100, (len(x0),))
                eps = torch.randn_like(x0)
                losses.append(torch.nn.functional.mse_loss(model(sched.add_noise(x0, eps, t), t), eps).item())
        samples, out["sample_s"] = reference_sample(ema.module, sched)
        out["kl"] = kl_divergence(data.numpy(), samples)
        out["eval_loss"] = sum(losses) / len(losses)
    return out


def reference_sample(model, sched, n: int = 10_000):
    """The reference's sampler: one batch, t = 99..0, t as a tensor, alpha's batch mean recorded."""
    import torch

    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        x, alphas = torch.randn(n, 2), []
        for t in range(99, -1, -1):
            tt = torch.full((n,), t, dtype=torch.long)
            eps_hat = model(x, tt)
            if model.mixer is not None:
                alphas.append(model.mixer(tt).mean().item())
            x = sched.step(eps_hat, t, x, torch.randn_like(x) if t > 0 else None)
    return x.numpy(), time.perf_counter() - start


def worker(args) -> dict:
    """One measurement in this process: (side, what, variant, threads) -> {"value": ...}."""
    import torch

    side, what, variant, threads, steps = args.side, args.what, args.variant, args.threads, args.steps
    if side == "reference":
        if what == "train":
            return {"value": reference_run("dino", variant, steps + 100, threads, time_steps=steps)["ms_per_step"]}
        from dualscale.diffusion import NoiseSchedule
        from dualscale.model import Denoiser

        torch.set_num_threads(threads)
        return {"value": reference_sample(Denoiser(variant), NoiseSchedule(100))[1]}
    from dualscale import TrainConfig
    from dualscale.diffusion import sample
    from dualscale.train import fit, train

    torch.set_num_threads(threads)
    if what == "train":
        cfg = TrainConfig(dataset="dino", variant=variant, steps=steps + 100)
        elapsed = [e.elapsed for e in train(cfg, "cpu", every=100) if e.step in (100, steps + 100)]
        return {"value": (elapsed[-1] - elapsed[0]) / steps * 1000}
    done = fit(TrainConfig(dataset="dino", variant=variant, steps=20, n_points=2048), "cpu")
    start = time.perf_counter()
    sample(done.emas[0], done.schedule, 10_000, torch.Generator().manual_seed(0))
    return {"value": time.perf_counter() - start}


def measure(side: str, what: str, variant: str, threads: int, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT)
    if side == "reference":
        env["GOMP_SPINCOUNT"] = LIBGOMP_DEFAULT  # torch's own OpenMP default, though dualscale is imported
    out = subprocess.run([sys.executable, __file__, "--worker", side, what, variant, str(threads), "--steps", str(steps)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["value"]


def reference_sweep_run(spec: str, steps: int) -> None:
    dataset, variant = spec.split("/")
    print(json.dumps(reference_run(dataset, variant, steps, 1, evaluate=True)))


def sweep(steps: int) -> tuple[float, float]:
    """(reference wall s, ours wall s) for the 4 runs."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT)
    ref_env = {**env, "GOMP_SPINCOUNT": LIBGOMP_DEFAULT}
    start = time.perf_counter()
    for pair in (SWEEP[:2], SWEEP[2:]):  # two at a time, one thread each
        procs = [subprocess.Popen([sys.executable, __file__, "--reference-run", f"{d}/{v}", "--steps", str(steps)],
                                  env=ref_env, stdout=subprocess.DEVNULL) for d, v in pair]
        if any(p.wait() for p in procs):
            raise SystemExit("a reference run failed")
    ref = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dualscale", "reproduce", "--datasets", "dino", "moons", "--variants",
                        "baseline", "adaptive", "--steps", str(steps), "--store", tmp], env={**env, "TQDM_DISABLE": "1"},
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours = time.perf_counter() - start
    return ref, ours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="timed training steps per measurement (after 100 warm-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sweep-steps", type=int, default=1000, help="training steps of each of the sweep's 4 runs")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--worker", nargs=4, metavar=("SIDE", "WHAT", "VARIANT", "THREADS"), help=argparse.SUPPRESS)
    p.add_argument("--reference-run", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        a.side, a.what, a.variant, a.threads = a.worker[0], a.worker[1], a.worker[2], int(a.worker[3])
        print(json.dumps(worker(a)))
        return
    if a.reference_run:
        reference_sweep_run(a.reference_run, a.steps)
        return
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores; {a.repeats} rounds, A/B interleaved; "
          f"training: {a.steps} timed steps (dino, batch 256, fp32); sampling: 10,000 points x 100 steps")
    rows = []
    for what in ("train", "sample"):
        for variant in ("baseline", "adaptive"):
            got = {(side, th): [] for side in ("reference", "ours") for th in (1, 2)}
            for r in range(a.repeats):
                order = list(got) if r % 2 == 0 else list(reversed(list(got)))
                for side, th in order:
                    got[side, th].append(measure(side, what, variant, th, a.steps))
            unit = "ms/step" if what == "train" else "s"
            med = {k: statistics.median(v) for k, v in got.items()}
            for (side, th), v in got.items():
                print(f"{what:6s} {variant:8s} {side:9s} {th} thread{'s' if th > 1 else ' '} {med[side, th]:8.3f} {unit}"
                      f"  (min {min(v):.3f}, max {max(v):.3f})")
            best = {side: min(med[side, 1], med[side, 2]) for side in ("reference", "ours")}
            rows.append((what, variant, best["reference"], best["ours"], unit))
            print(f"{what:6s} {variant:8s} best: reference {best['reference']:.3f}, ours {best['ours']:.3f} {unit}: "
                  f"{best['reference'] / best['ours']:.2f}x")
    if not a.no_sweep:
        ref, ours = sweep(a.sweep_steps)
        print(f"sweep of 4 runs ({a.sweep_steps} steps each, evaluation included): reference two at a time, one thread "
              f"each {ref:.1f} s; ours (reproduce, default jobs) {ours:.1f} s: {ref / ours:.2f}x")
    print("summary (reference / ours, each at its best thread count):",
          ", ".join(f"{w} {v} {r / o:.2f}x" for w, v, r, o, _ in rows))


if __name__ == "__main__":
    main()
