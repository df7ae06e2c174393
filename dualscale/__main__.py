"""Command line: python -m dualscale {train, reproduce, list}.

Exit codes: 0 done, 1 the run failed, 2 bad input, 3 the same config is already training,
130 cancelled (Ctrl-C or SIGTERM).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from tqdm import tqdm

from .config import SCHEDULES, VARIANTS, WEIGHT_NETS, TrainConfig
from .data import DATASETS, PAPER_DATASETS
from .runs import DEVICES, Cancelled, resolve_device, run_config
from .store import RunInProgress, Store, StoreError
from .train import TrainingFailed

PAPER_TEXT = {"lr": 1e-4, "batch_size": 64, "kl_weight": 0.1}  # what the paper's prose says


def settings_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training settings (defaults: the reference experiment)")
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip)
    g.add_argument("--kl-weight", type=float, default=d.kl_weight, help="lambda of the paper's VLB KL term")
    g.add_argument("--weight-net", choices=WEIGHT_NETS, default=d.weight_net)
    g.add_argument("--beta-schedule", choices=SCHEDULES, default=d.beta_schedule)
    g.add_argument("--timesteps", type=int, default=d.timesteps)
    g.add_argument("--n-points", type=int, default=d.n_points)
    g.add_argument("--n-samples", type=int, default=d.n_samples)
    g.add_argument("--paper-text", action="store_true",
                   help="use the paper prose's values instead: lr 1e-4, batch 64, kl weight 0.1")
    p.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (auto: cuda, mps, cpu)")
    p.add_argument("--store", default="checkpoints", help="run store folder (default: checkpoints)")
    p.add_argument("--force", action="store_true", help="retrain even if the config is stored")


def settings(a: argparse.Namespace) -> dict:
    out = {k: getattr(a, k) for k in ("steps", "batch_size", "lr", "weight_decay", "grad_clip", "kl_weight",
                                      "weight_net", "beta_schedule", "timesteps", "n_points", "n_samples")}
    return {**out, **PAPER_TEXT} if a.paper_text else out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dualscale", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, evaluate and store one run; prints its metrics as JSON")
    t.add_argument("--dataset", default="dino", help=f"one of: {', '.join(DATASETS)}")
    t.add_argument("--variant", default="adaptive", help=f"one of: {', '.join(VARIANTS)}")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--previews", type=int, default=0, help="progress events carrying alpha(t) and samples")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    settings_args(t)
    r = sub.add_parser("reproduce", help="the paper's 3 variants x 4 datasets and its three tables")
    r.add_argument("--datasets", "--dataset", nargs="+", default=list(PAPER_DATASETS))
    r.add_argument("--variants", "--variant", nargs="+", default=list(VARIANTS))
    r.add_argument("--seeds", "--seed", nargs="+", type=int, default=[0])
    r.add_argument("--half", action="store_true", help="store float16 weights (metrics computed from them)")
    r.add_argument("--jobs", type=int, help="runs at a time in worker processes (default: one per CPU core up to 4; "
                   "up to 8 on a CUDA GPU; 1 on MPS)")
    r.add_argument("--out", help="folder for the tables (default: <store>/tables)")
    settings_args(r)
    ls = sub.add_parser("list", help="the runs in the store")
    ls.add_argument("--store", default="checkpoints")
    return p


def on_sigterm(*_):
    raise Cancelled("cancelled")


def run_one(config: TrainConfig, store: Store, a, position: str = "", **kw) -> dict:
    """Run one config with a tqdm bar on stderr; returns the final event."""
    bar = tqdm(total=config.steps, desc=f"{position}{config.dataset}/{config.variant}/s{config.seed}",
               unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)
    final = {}
    with bar:
        for ev in run_config(config, store, a.device, a.force, **kw):
            if ev["event"] == "progress":
                bar.update(ev["step"] - bar.n)
                bar.set_postfix(loss=f"{ev['loss']:.4f}")
            elif ev["event"] == "evaluating":
                bar.set_postfix_str("sampling + KL")
            else:
                final = ev
                bar.update(config.steps - bar.n)
    return final


def cmd_train(a) -> int:
    config = TrainConfig(dataset=a.dataset, variant=a.variant, seed=a.seed, **settings(a)).validate()
    resolve_device(a.device)  # every check before the first bar is drawn
    if a.threads is not None:
        if a.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {a.threads}")
        import torch

        torch.set_num_threads(a.threads)
    store = Store(a.store)
    store.check_writable()
    ev = run_one(config, store, a, previews=a.previews)
    print(json.dumps({k: v for k, v in ev.items() if k != "event"}))
    return 0


def run_parallel(configs, store: Store, a, jobs: int) -> None:
    """One bar over all steps of the sweep, fed by the workers' progress files."""
    from .reproduce import sweep

    finished = {}
    with tqdm(total=sum(c.steps for c in configs), desc=f"{len(configs)} runs, {jobs} at a time",
              unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        for config, done in sweep(configs, str(store.root), a.device, jobs, a.force, a.half):
            if config is not None:
                finished[config.run_id] = config.steps
                tqdm.write(f"done {config.dataset}/{config.variant}/s{config.seed}: loss {done['eval_loss']:.4f} "
                           f"KL {done['kl_divergence']:.3f}{' (stored)' if done['cached'] else ''}", file=sys.stderr)
            steps = sum(finished.get(c.run_id) or _last_step(store, c.run_id) for c in configs)
            bar.update(steps - bar.n)


def _last_step(store: Store, run_id: str) -> int:
    steps = [e["step"] for e in store.progress(run_id) if e.get("event") == "progress"]
    return steps[-1] if steps else 0


def cmd_reproduce(a) -> int:
    from .reproduce import TITLES, default_jobs, experiment, fidelity, markdown, metrics_frame, table

    configs = experiment(a.seeds, a.datasets, a.variants, **settings(a))  # all validated up front
    device = resolve_device(a.device)
    jobs = default_jobs(str(device)) if a.jobs is None else a.jobs
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    store = Store(a.store)
    store.check_writable()
    if jobs == 1:
        for i, config in enumerate(configs):
            run_one(config, store, a, position=f"[{i + 1}/{len(configs)}] ", half=a.half)
    else:
        run_parallel(configs, store, a, jobs)
    frame = metrics_frame([store.find(c) for c in configs])
    out = a.out or "tables"
    texts = []
    for variant in a.variants:
        tab = table(frame, variant)
        texts.append(markdown(tab, TITLES[variant]))
        store.write_text(f"{out}/{variant}.csv", tab.to_csv(index=False))
    report = "\n".join(texts)
    reference = settings(a) == {k: getattr(TrainConfig(), k) for k in settings(a)}
    if not reference:
        report += "\nFidelity: not checked (the settings differ from the reference experiment)\n"
    else:
        report += "\nFidelity (eval loss within 0.01 of the paper, KL inside the reference's run-to-run range): "
        problems = fidelity(frame)
        report += "all rows inside\n" if not problems else "\n".join(["rows OUTSIDE:"] + problems) + "\n"
    store.write_text(f"{out}/tables.md", report)
    store.write_text(f"{out}/runs.csv", frame.to_csv(index=False))
    print(report)
    return 0


def cmd_list(a) -> int:
    store = Store(a.store)
    for run in store.runs():
        m = run.metrics
        print(f"{run.id:48s} {'ref' if run.is_reference else 'local':5s} loss {m['eval_loss']:.4f} "
              f"KL {m['kl_divergence']:.3f} train {m['training_time']:.1f}s {m.get('device', '?')}")
    for line in store.problems():
        print(f"unreadable: {line}", file=sys.stderr)
    for info in store.active():
        print(f"{info['run_id']:48s} training (pid {info['pid']})")
    return 0


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return {"train": cmd_train, "reproduce": cmd_reproduce, "list": cmd_list}[a.command](a)
    except (Cancelled, KeyboardInterrupt):
        print("cancelled; nothing was stored", file=sys.stderr)
        return 130
    except RunInProgress as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except TrainingFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
