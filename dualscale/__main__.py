"""Command line: python -m dualscale {train, reproduce, settle, verdict, rescore, export, list}.

Exit codes: 0 done, 1 the run failed, 2 bad input, 3 the same config is already training,
130 cancelled (Ctrl-C or SIGTERM).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import events
from .config import SELECTION, VARIANTS, TrainConfig, bounds_text, fields, training_settings
from .data import PAPER_DATASETS
from .metrics import METRICS
from .paper import PAPER_TEXT
from .events import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_LOCKED, Cancelled, TrainingFailed
from .store import RunInProgress, Store, StoreError
from .system import DEVICES, resolve_device

STARTED = time.perf_counter()  # the wall-time summary of a stacked sweep counts from here
TYPES = {"int": int, "float": float, "str": str}
JUDGED_METRICS = [m for m, spec in METRICS.items() if spec.margin is not None]
MAX_THREADS, MAX_JOBS = 1024, 256  # beyond these a number is a typo, not a machine
STORED: list[str] = []  # runs this command stored (not loaded): what an interruption keeps
MAX_BUDGET_SEEDS = 100_000  # settle: more seeds than a person would train; the plan is made lazily anyway
SWEEP_DEFAULTS = {"dataset": PAPER_DATASETS, "variant": VARIANTS}  # reproduce: the paper's grid


def field_help(f) -> str:
    """A setting's help line: its text, bounds or choices, and its default."""
    m = f.metadata
    limits = f"one of: {', '.join(m['choices'])}" if m["choices"] else bounds_text(f)
    return f"{m['help']}" + (f"; {limits}" if limits else "") + " (default: %(default)s)"


def seed_range(text: str) -> list[int]:
    """'3' -> [3]; '0-9' -> [0, ..., 9] (both ends included)."""
    lo, sep, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a seed or a range of seeds (like 0-9): {text!r}")
    if last < first:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    if last - first >= 100_000:
        raise argparse.ArgumentTypeError(f"seed range {text!r} is longer than 100,000 runs")
    return list(range(first, last + 1))


def add_field(g, f, plural: bool = False) -> None:
    """One TrainConfig field as a flag (--batch-size); plural: a list (--datasets a b, --seeds 0 1 5-9)."""
    flag = "--" + f.name.replace("_", "-")
    if plural:
        default = list(SWEEP_DEFAULTS.get(f.name, [f.default]))
        kind = seed_range if f.name == "seed" else TYPES[f.type]
        g.add_argument(flag + "s", flag, dest=f.name, nargs="+", type=kind, default=default,
                       help=field_help(f).replace("(default: %(default)s)", f"(default: {' '.join(map(str, default))})"))
    else:
        aliases = ["--precision"] if f.name == "compute_precision" else []  # the short name the issue asked for
        g.add_argument(flag, *aliases, type=TYPES[f.type], default=f.default, help=field_help(f))


def settings_args(p: argparse.ArgumentParser, plural: bool, engine: bool = False) -> None:
    for f in fields():
        if f.name in SELECTION:
            add_field(p, f, plural)
    g = p.add_argument_group("training settings (defaults: the reference experiment)")
    for f in training_settings():
        add_field(g, f)
    g.add_argument("--paper-text", action="store_true",
                   help="use the paper prose's values instead: " + ", ".join(f"{k} {v}" for k, v in PAPER_TEXT.items()))
    p.add_argument("--force", action="store_true", help="retrain even if the config is stored")
    (engine_args if engine else store_args)(p)


def store_args(p: argparse.ArgumentParser) -> None:
    """Where runs are stored and how: device, store, float16 weights, light runs, your own data."""
    p.add_argument("--data-file", metavar="CSV", help="your own point cloud: a CSV of two numeric columns x, y "
                   "(optional header); kept in the store under its content hash and used as the dataset "
                   "(named <file stem>-<hash>)")
    p.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (auto: cuda, mps, cpu)")
    p.add_argument("--store", default="checkpoints", help="run store folder (default: %(default)s)")
    p.add_argument("--half", action="store_true", help="store float16 weights (metrics computed from them)")
    p.add_argument("--light", action="store_true", help="store runs without weights and trajectory, samples as "
                   "float16 with every metric computed from them, the loss history as 100-step means (how "
                   "evidence and studies ship)")


def engine_args(p: argparse.ArgumentParser) -> None:
    """How a sweep runs its configs: local workers, stacked, or a Dask cluster (reproduce, settle)."""
    store_args(p)
    p.add_argument("--jobs", type=int, help="runs at a time in worker processes (default: one per CPU core up to 4; "
                   "up to 8 on a CUDA GPU; 1 on MPS); with --stack: the processes that score the runs "
                   "(default: one per CPU core)")
    p.add_argument("--stack", action=argparse.BooleanOptionalAction, default=None,
                   help="train runs that share steps, batch and data size as one stacked model per step, in "
                   "this process (default: on a CUDA GPU; on a CPU separate workers measure faster)")
    p.add_argument("--cluster", metavar="ADDRESS", help="run the sweep on a Dask cluster: a running scheduler "
                   "(tcp://host:8786) or 'local' (a LocalCluster of --jobs workers started here); workers send "
                   "each run back, this process writes the store")


def settings(a: argparse.Namespace) -> dict:
    """The training settings the flags give (the selection fields excluded)."""
    out = {f.name: getattr(a, f.name) for f in training_settings()}
    return {**out, **PAPER_TEXT} if a.paper_text else out


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line that names the help to read, not a screen of usage before it."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see: {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m dualscale", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, evaluate and store one run; prints its metrics as JSON")
    settings_args(t, plural=False)
    t.add_argument("--config", help="the whole config as JSON (what workers receive); replaces the setting flags")
    t.add_argument("--previews", type=int, default=0, help="progress events carrying alpha(t) and samples")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    r = sub.add_parser("reproduce", help="the paper's 3 variants x 4 datasets and its three tables")
    settings_args(r, plural=True, engine=True)
    r.add_argument("--out", help="folder for the tables (default: <store>/tables)")
    se = sub.add_parser("settle", help="add seeds until the primary family (or --metric's) is decided, or the "
                        "budget is spent; resumable: stored runs are never retrained")
    se.add_argument("--datasets", "--dataset", dest="dataset", nargs="+", default=list(PAPER_DATASETS),
                    metavar="DATASET", help="datasets to settle (default: the paper's four)")
    se.add_argument("--metric", default="kl_divergence", choices=[m for m, spec in METRICS.items() if spec.margin],
                    help="the metric whose family is settled (default: %(default)s, the primary family)")
    se.add_argument("--family", default="primary", help="primary (exploratory: the paper's four datasets, or "
                    "--metric's secondary family) or confirmatory (declared before its data: dino, KL, the three "
                    "pairs, fresh seeds 68 and up, judged by the share of seeds where a beats b; the reference "
                    "settings only) (default: %(default)s)")
    se.add_argument("--budget-seeds", type=int, default=100, help="stop when the open comparisons have this many "
                    "seeds (confirmatory: this many fresh seeds) (default: %(default)s)")
    se.add_argument("--batch", type=int, default=10, help="seeds added per round to each undecided comparison "
                    "(default: %(default)s)")
    g = se.add_argument_group("training settings (defaults: the reference experiment)")
    for f in training_settings():
        add_field(g, f)
    g.add_argument("--paper-text", action="store_true", help="use the paper prose's values instead")
    se.add_argument("--force", action="store_true", help="retrain the plan's runs that are stored but damaged "
                    "(settle never retrains a readable run)")
    engine_args(se)
    v = sub.add_parser("verdict", help="paired comparisons of the variants over seeds: intervals, tests, verdicts")
    v.add_argument("--store", default="checkpoints", help="run store folder; its shipped folders (reference/, study/, "
                   "evidence/) are read with it, so the default store includes the project's shipped runs "
                   "(default: %(default)s)")
    v.add_argument("--metrics", nargs="+", metavar="METRIC",
                   help="metrics to show (default: every judged metric: " + ", ".join(JUDGED_METRICS)
                   + "; timing metrics are never judged: they depend on the machine and its load, not the model)")
    v.add_argument("--json", action="store_true", help="one JSON list of comparison objects instead of the table")
    v.add_argument("--by", choices=("variant", "schedule"), default="variant",
                   help="compare the variants (the paper's question), or each noise schedule against the "
                   "linear one per variant (default: %(default)s)")
    rs = sub.add_parser("rescore", help="compute the metrics stored runs lack: sample metrics from their stored "
                        "samples, start_mismatch from the data, kl_oracle_start from their weights")
    rs.add_argument("--store", default="checkpoints", help="run store folder (default: %(default)s)")
    rs.add_argument("--check", action="store_true", help="recompute every metric each run can be scored on "
                    "again and report those that differ from the stored value (writes nothing)")
    ex = sub.add_parser("export", help="light copies of a store's runs (samples, alpha(t), loss history, metrics, "
                        "how each was made; no weights, no trajectory) into another folder")
    ex.add_argument("--store", default="checkpoints", help="where the runs are (default: %(default)s)")
    ex.add_argument("--to", required=True, help="folder to copy them into, e.g. checkpoints/reference")
    ls = sub.add_parser("list", help="the runs in the store")
    ls.add_argument("--store", default="checkpoints", help="run store folder: its local runs, then its shipped "
                    "folders (reference/, study/, evidence/) (default: %(default)s)")
    return p


def on_sigterm(*_):
    raise Cancelled("cancelled")


def run_one(config: TrainConfig, store: Store, a, **kw) -> dict:
    """Run one config with a tqdm bar of its training steps on stderr, then one line per phase
    after training (so the bar's steps/s is the training's own); returns the final event."""
    from .runs import run_config  # torch: only commands that train need it

    bar, final = None, {}
    for ev in run_config(config, store, a.device, a.force, half=a.half, light=a.light, **kw):
        if ev["event"] == events.PROGRESS:
            if bar is None:
                bar = tqdm(total=config.steps, desc=f"{config.dataset}/{config.variant}/s{config.seed}",
                           unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)
            bar.update(ev["step"] - bar.n)
            bar.set_postfix(loss=f"{ev['loss']:.4f}")
        elif ev["event"] == events.EVALUATING:
            if bar is not None:
                bar.close()
        elif ev["event"] == events.PHASE:
            print(f"evaluating {ev['index']}/{ev['of']}: {ev['name']}", file=sys.stderr, flush=True)
        else:
            final = ev
            if ev.get("cached"):
                print(f"stored: {ev['run_id']} loaded, not retrained (--force retrains it)", file=sys.stderr)
            elif ev.get("run_id"):
                STORED.append(ev["run_id"])
    return final


def user_data(a) -> str | None:
    """--data-file: read and check the CSV (one line if it is bad; nothing stored), name the dataset
    by its content and make its points known here; Store.save_data keeps them once a run starts."""
    if not a.data_file:
        return None
    from . import userdata

    points = userdata.read_csv(a.data_file)
    name = userdata.name_of(points, Path(a.data_file).name)
    userdata.register(name, points)
    a.user_points = points
    return name


def keep_user_data(a, store: Store) -> None:
    if getattr(a, "user_points", None) is not None:
        store.check_writable()
        store.save_data(a.user_points, Path(a.data_file).name)


def cmd_train(a) -> int:
    if (name := user_data(a)) is not None:
        if a.config is not None:
            raise ValueError("--data-file names the dataset itself; leave it out of --config")
        a.dataset = name
    if a.config is not None:
        config = TrainConfig.from_json(a.config)
    else:
        config = TrainConfig(**{n: getattr(a, n) for n in SELECTION}, **settings(a)).validate()
    config.check_resources()
    if not 0 <= a.previews <= config.steps:
        raise ValueError(f"--previews must be in 0..{config.steps} (the steps), got {a.previews}")
    resolve_device(a.device)  # every check before the first bar is drawn
    if a.threads is not None:
        if not 1 <= a.threads <= MAX_THREADS:
            raise ValueError(f"--threads must be in 1..{MAX_THREADS}, got {a.threads}")
        import torch

        torch.set_num_threads(a.threads)
    store = Store(a.store)
    if a.force or store.find(config) is None:  # a stored run loads even from a read-only store
        store.check_writable()
    keep_user_data(a, store)
    ev = run_one(config, store, a, previews=a.previews)
    print(json.dumps({k: v for k, v in ev.items() if k != "event"}), flush=True)
    return 0


def run_sweep(configs, store: Store, a, jobs: int, bar=None) -> None:
    """The runs through joblib (sweeps.py): `jobs` reusable local workers, or a Dask cluster with
    --cluster. One bar over the runs (`bar`: a caller's, else a new one); a line per finished run."""
    import contextlib

    from .sweeps import sweep
    from .system import threads_per_worker

    kl = METRICS["kl_divergence"]
    if a.cluster and a.cluster != "local":
        from .sweeps import connect

        connect(a.cluster).close()  # an unreachable scheduler: one line, before any bar
    where = f"on {a.cluster}" if a.cluster else f"{jobs} at a time"
    threads = 1 if a.cluster else threads_per_worker(jobs)
    own = bar is None
    with (tqdm(total=len(configs), desc=f"{len(configs)} runs, {where}", unit="run", file=sys.stderr,
               dynamic_ncols=True) if own else contextlib.nullcontext(bar)) as bar:
        by_id = {c.run_id: c for c in configs}
        for m in sweep(configs, store, a.device, jobs, a.cluster, a.half, getattr(a, "force", False), threads, a.light):
            config, cached = by_id[m["run_id"]], m["cached"]
            if not cached:
                STORED.append(m["run_id"])
            tqdm.write(f"done {config.dataset}/{config.variant}/s{config.seed}: loss {m['eval_loss']:.4f} "
                       f"KL {kl.format(m['kl_divergence'])}{' (stored)' if cached else ''}", file=sys.stderr)
            bar.update(1)


def run_stacked(configs, store: Store, a, device, runs_bar=None) -> None:
    """Stacked runs (stack_sweep.py) in this process: one bar over the stacks' steps (or a caller's bar
    over runs, `runs_bar`), a line per stored run."""
    from .stack_sweep import run_stacks, stacks_of

    todo = [c for c in configs if getattr(a, "force", False) or store.find(c) is None]
    kl = METRICS["kl_divergence"]
    for c in configs:
        if c not in todo:
            tqdm.write(f"stored: {c.dataset}/{c.variant}/s{c.seed} (--force retrains it)", file=sys.stderr)
    stacks = stacks_of(todo)
    command = remake_sweep_command(a.argv)
    import contextlib

    with (tqdm(total=sum(s[0].steps for s in stacks), desc=f"{len(todo)} runs in {len(stacks)} stack(s)",
               unit="step", file=sys.stderr, dynamic_ncols=True) if runs_bar is None
          else contextlib.nullcontext()) as bar:
        offset, timings, by_id = 0, {}, {c.run_id: c for c in todo}
        for event in run_stacks(todo, store, device, a.half, a.light, command, jobs=a.jobs, timings=timings):
            if event["event"] == events.PROGRESS:
                done, total = event["step"], event["total"]
                if bar is not None:
                    bar.update(offset + done - bar.n)
                    if done == total:
                        offset += total
                        bar.set_postfix_str("evaluating")
            else:
                c = by_id[event["run_id"]]
                STORED.append(event["run_id"])
                if runs_bar is not None:
                    runs_bar.update(1)
                tqdm.write(f"done {c.dataset}/{c.variant}/s{c.seed}: loss {event['eval_loss']:.4f} "
                           f"KL {kl.format(event['kl_divergence'])}", file=sys.stderr)
    if todo:  # where the time went (the GPU's figures: benchmarks/results)
        wall = time.perf_counter() - STARTED
        parts = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        print(f"{len(todo)} stacked runs, {wall:.1f} s since start: {parts}, "
              f"start-up and the rest {wall - sum(timings.values()):.1f}", file=sys.stderr)


def remake_sweep_command(argv: list[str]) -> str:
    """This command line, with the store replaced by TMP and --force dropped: what remakes a stack."""
    import shlex

    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--store":
            skip = True
            continue
        if arg.startswith("--store=") or arg == "--force":
            continue
        out.append(arg)
    return "python -m dualscale " + shlex.join(out) + " --store TMP"


def engine(a, store: Store):
    """Check the sweep flags of `a` once; return run(configs, bar=None) that trains and stores them
    (stacked, local workers or a Dask cluster)."""
    from .system import default_jobs

    device = resolve_device(a.device)
    jobs = default_jobs(str(device)) if a.jobs is None else a.jobs
    if not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"--jobs must be in 1..{MAX_JOBS}, got {jobs} (a sweep never starts more workers than runs)")
    store.check_writable()
    stack = (device.type == "cuda" and not a.cluster) if a.stack is None else a.stack
    if stack and a.cluster:
        raise ValueError("--stack runs in this process; a --cluster sweep sends single runs to its workers")
    if stack:
        return lambda configs, bar=None: run_stacked(configs, store, a, device, bar)
    return lambda configs, bar=None: run_sweep(configs, store, a, jobs, bar)


def cmd_reproduce(a) -> int:
    from .paper import experiment, for_csv, is_reference, metrics_frame, report

    if (name := user_data(a)) is not None:
        a.dataset = [name]
    seeds = list(dict.fromkeys(s for group in a.seed for s in (group if isinstance(group, list) else [group])))
    configs = experiment(seeds, a.dataset, a.variant, **settings(a))  # all validated up front
    store = Store(a.store)
    run = engine(a, store)
    keep_user_data(a, store)
    run(configs)
    frame = metrics_frame([store.find(c) for c in configs])
    out = str(Path(a.out).resolve()) if a.out else "tables"  # --out is relative to here, the default to the store
    tables, text = report(frame, dict.fromkeys(a.variant), is_reference(settings(a)))
    for variant, tab in tables.items():
        store.write_text(f"{out}/{variant}.csv", for_csv(tab).to_csv(index=False))
    store.write_text(f"{out}/tables.md", text)
    path = store.write_text(f"{out}/runs.csv", for_csv(frame).to_csv(index=False))
    print(text)
    print(f"tables written to {path.parent}/ (baseline.csv, fixed.csv, adaptive.csv, runs.csv, tables.md)",
          file=sys.stderr)
    return 0


def cmd_settle(a) -> int:
    from .config import settings_tag
    from .settle import FAMILIES, family_label, plan
    from .stats import CONFIRM, CONFIRMATORY, Verdicts

    if a.family not in FAMILIES:
        raise ValueError(f"unknown --family {a.family!r}; choose from: {', '.join(FAMILIES)}")
    if not 2 <= a.budget_seeds <= MAX_BUDGET_SEEDS or not 1 <= a.batch <= a.budget_seeds:
        raise ValueError(f"--budget-seeds must be in 2..{MAX_BUDGET_SEEDS} and --batch in 1..--budget-seeds, "
                         f"got {a.budget_seeds} and {a.batch}")
    if (name := user_data(a)) is not None:
        a.dataset = [name]
    target = TrainConfig(**settings(a)).validate()
    if a.family == CONFIRMATORY:
        if a.data_file or a.dataset not in (list(PAPER_DATASETS), [CONFIRM.dataset]) or a.metric != CONFIRM.metric:
            raise ValueError(f"the confirmatory family is declared on {CONFIRM.dataset} and {CONFIRM.metric}; "
                             "leave out --datasets, --data-file and --metric")
        if settings_tag(target):
            raise ValueError(f"the confirmatory family is declared at the reference settings; drop {settings_tag(target)}")
        a.dataset = [CONFIRM.dataset]
    for d in a.dataset:  # an unknown name is refused here, before the store, its locks and a bar exist
        TrainConfig(**{**target.to_dict(), "dataset": d}).validate().check_resources()
    store = Store(a.store)
    if a.family == CONFIRMATORY and not any((store.root / f).is_dir() for f in ("reference", "evidence")):
        raise StoreError(f"{store.root} holds no shipped runs (reference/, evidence/): the confirmatory family "
                         "continues the project's store (--store checkpoints)")
    run = engine(a, store)
    keep_user_data(a, store)
    print(f"settling the {family_label(a.metric, a.dataset[0], a.family)} family on {', '.join(a.dataset)}, "
          f"at most {a.budget_seeds} seeds, {a.batch} per round", file=sys.stderr)
    with tqdm(total=0, desc="settle", unit="run", file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            rnd = plan(store.runs(), target, a.dataset, a.metric, a.budget_seeds, a.batch, a.family)
            for c in rnd.open:
                tqdm.write(settle_line(c), file=sys.stderr)
            if rnd.missing:
                tqdm.write(f"not judged yet (too few paired seeds): {', '.join(rnd.missing)}", file=sys.stderr)
            if not rnd.todo:
                break
            bar.total += len(rnd.todo)
            bar.refresh()
            run(rnd.todo, bar)
    print(verdict_table(Verdicts(rnd.family)))
    if rnd.open or rnd.missing:
        print(f"budget spent: {len(rnd.open)} comparison(s) still undecided at {a.budget_seeds} seeds"
              + (f"; not judged yet: {', '.join(rnd.missing)}" if rnd.missing else ""))
    else:
        print(f"decided: every comparison of the family on {', '.join(a.dataset)}")
    return 0


def settle_line(c) -> str:
    from .sentences import confirm_text, diff_text, projection_text

    if c.family == "confirmatory":
        return f"undecided {c.dataset} {c.a} - {c.b} (confirmatory): {confirm_text(c)}"
    return (f"undecided {c.dataset} {c.a} - {c.b}: n {c.n}, mean {diff_text(c.metric, c.mean_diff)}, sequence "
            f"[{diff_text(c.metric, c.cs_low)}, {diff_text(c.metric, c.cs_high)}]; {projection_text(c)}")


def cmd_verdict(a) -> int:
    from .paper import metrics_frame
    from .stats import Verdicts, compare_schedules, verdict_of

    store = Store(a.store)
    if not store.root.is_dir():
        raise StoreError(f"no run store at {store.root}")
    for m in a.metrics or ():
        if m in METRICS and m not in JUDGED_METRICS:
            raise ValueError(f"{m} is never judged: it is measured per machine and load, not a property of the model; "
                             f"choose from: {', '.join(JUDGED_METRICS)}")
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; choose from: {', '.join(JUDGED_METRICS)}")
    runs, problems = store.scan()
    if a.by == "variant":
        verdicts = verdict_of(runs, store)  # the one verdict every page reads; --metrics picks what is shown
        if a.metrics:
            verdicts = Verdicts([c for c in verdicts.comparisons if c.metric in a.metrics], verdicts.unpaired)
    else:
        verdicts = compare_schedules(metrics_frame(runs), a.metrics)
    if a.json:
        print(json.dumps([c.to_json() for c in verdicts.comparisons]))
        return 0
    print(verdict_table(verdicts, runs, problems))
    for rid, why in problems.items():
        print(f"unreadable: {rid}: {why}", file=sys.stderr)
    return 0


def verdict_table(verdicts, runs=(), problems=None) -> str:
    """The comparisons as text: a section per family (the confirmatory, then the primary first) within
    each set of settings; under each section its notes (doubts, projections)."""
    from .sentences import doubt_text, projection_text
    from .stats import ALPHA, CONFIRMATORY

    head = (f"{'dataset':8s} {'a - b':34s} {'n':>4s} {'mean diff':>10s} {'sequence interval':>22s} "
            f"{'t-interval (descr.)':>22s} {'P(a better) [interval]':>23s}  decision")
    lines = []
    settings = sorted(dict.fromkeys(c.settings for c in verdicts.comparisons), key=bool)  # the reference first
    order = {CONFIRMATORY: 0, "primary": 1}
    for st in settings:
        mine = [c for c in verdicts.comparisons if c.settings == st]
        families = sorted(dict.fromkeys(c.family for c in mine), key=lambda f: (order.get(f, 2), f))
        for fam in families:
            members = [c for c in mine if c.family == fam]
            size = members[0].family_size
            what = {CONFIRMATORY: "declared before its data; seeds 68 and up; decided by P(a better)",
                    "primary": "exploratory: its seeds were looked at"}.get(fam, "secondary")
            lines.append(f"== {fam} ({size} comparisons, each interval at {ALPHA:g}/{size}; {what}) - "
                         f"{st or 'the reference settings'}")
            lines.append(head)
            notes = []
            for c in members:
                lines.append(_verdict_line(c))
                pair = f"{c.dataset} {c.a} - {c.b}" + ("" if fam in order else f" {METRICS[c.metric].short}")
                if c.gaussian_doubt and fam != CONFIRMATORY:
                    notes.append(f"  ! {pair}: {doubt_text(c)}")
                if c.decision == "undecided" and fam != CONFIRMATORY:
                    notes.append(f"  {pair}: {projection_text(c)}")
            lines += notes + [""]
    if not verdicts.comparisons:
        lines.append("no pairs: every comparison needs at least 2 seeds of both variants with the same settings")
    else:
        lines.append("sequence interval: valid however often seeds are added, for roughly symmetric differences (the "
                     "Gaussian-mixture sequence of Wang & Ramdas 2023, Bonferroni within the family); P(a better): "
                     "the share of seeds where a beats b, with an anytime-valid interval that assumes only "
                     "independent seeds (it decides the confirmatory family, and describes the rest)")
    from .sentences import unpaired_lines

    lines += [f"unpaired: {line}" for line in unpaired_lines(verdicts.unpaired, runs, problems or {})]
    return "\n".join(lines)


def _verdict_line(c) -> str:
    from .sentences import diff_text

    def span(lo, hi):
        return f"[{diff_text(c.metric, lo)}, {diff_text(c.metric, hi)}]"

    m = METRICS[c.metric]
    pair = c.a + " - " + c.b + (f" ({c.variant})" if c.variant else "") + ("" if c.family in ("primary", "confirmatory")
                                                                          else f" {m.short}")
    word = c.decision + (" (real but negligible)" if c.negligible else "") + (" !" if c.gaussian_doubt else "")
    improve = f"{c.p_improve:.2f} [{c.pi_low:.2f}, {c.pi_high:.2f}]"
    return (f"{c.dataset:8s} {pair:34s} {c.n:4d} {diff_text(c.metric, c.mean_diff):>10s} "
            f"{span(c.cs_low, c.cs_high):>22s} {span(c.ci_low, c.ci_high):>22s} {improve:>23s}  {word}")


def cmd_rescore(a) -> int:
    from .runs import check, rescore

    store = Store(a.store)
    if not store.root.is_dir():
        raise StoreError(f"no run store at {store.root}")
    if a.check:
        from .runs import known_difference

        runs, differ, known = store.runs(), 0, 0
        for run, diffs in tqdm(check(store, runs), total=len(runs), desc="check", unit="run", file=sys.stderr):
            for m, (stored, fresh) in diffs.items():
                why = known_difference(run, m)
                differ, known = differ + (why is None), known + (why is not None)
                tqdm.write(f"{'differs' if why is None else 'known'}: {run.id} {m}: stored {stored!r}, recomputed "
                           f"{fresh!r}" + (f" ({why})" if why else ""))
        print(f"{len(runs)} runs checked: {differ} stored metric(s) differ from a recomputation"
              + (f"; {known} more differ for a known, dated reason (above)" if known else ""))
        return 1 if differ else 0
    store.check_writable()
    done = 0
    for run, values in rescore(store):
        done += 1
        print(f"{run.id}: " + ", ".join(f"{k} {METRICS[k].format(v)}" if k in METRICS else f"{k} (mean {v:.4f})"
                                        for k, v in values.items()))
    if not done:
        print("nothing to rescore: every run has every metric it can be given")
    return 0


def cmd_export(a) -> int:
    from .runs import made_of

    store, to = Store(a.store), Path(a.to)
    if not store.root.is_dir():
        raise StoreError(f"no run store at {store.root}")
    Store(to).check_writable()  # an unwritable destination is one line now, not "0 written" at the end
    every, problems = store.scan()
    runs = [r for r in every if not r.shipped and r.path.parent.resolve() != to.resolve()]
    written, failed = 0, []
    for run in tqdm(runs, desc=f"export to {to}", unit="run", file=sys.stderr):
        if (to / run.id / "run.json").is_file():
            continue  # never re-write an unchanged run
        try:
            made = made_of(run.verify())
        except (StoreError, OSError) as e:  # a damaged run is skipped and named, like an unreadable one
            tqdm.write(f"skipped: {run.id} is damaged: {_why_line(e)}", file=sys.stderr)
            continue
        try:
            store.save_light(run, root=to, made=made)
            written += 1
        except (StoreError, OSError) as e:  # a failed write: named, the rest go on, and the command fails
            failed.append(run.id)
            tqdm.write(f"not exported: {run.id}: {_why_line(e)}", file=sys.stderr)
    for rid, why in problems.items():
        print(f"unreadable, not exported: {rid}: {why}", file=sys.stderr)
    there = sum((to / r.id / "run.json").is_file() for r in runs) - written
    shipped = len(every) - len(runs)
    print(f"{written} of {len(runs)} local runs written to {to}" + (f", {there} there already" if there else "")
          + (f", {len(failed)} failed" if failed else "")
          + (f"; {shipped} shipped runs left out (they ship with the project already)" if shipped else ""))
    return EXIT_FAILED if failed else 0


def _why_line(e: BaseException) -> str:
    if isinstance(e, OSError):
        return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
    return str(e).splitlines()[0]


def cmd_list(a) -> int:
    from .config import settings_tag

    store = Store(a.store)
    if not store.root.is_dir():
        raise StoreError(f"no run store at {store.root}")
    for line in store.recover():
        print(f"store: {line}", file=sys.stderr)
    loss, kl, train = METRICS["eval_loss"], METRICS["kl_divergence"], METRICS["training_time"]
    runs, problems = store.scan()
    print(f"{'run':48s} {'where':9s} {'eval loss':>9s} {'KL':>7s} {'train s':>8s} {'device':6s} settings")
    for run in runs:
        m = run.metrics
        where = run.path.parent.name if run.shipped else "local"
        print(f"{run.id:48s} {where:9s} {loss.format(m['eval_loss']):>9s} {kl.format(m['kl_divergence']):>7s} "
              f"{train.format(m['training_time']):>8s} {str(m.get('device', '?')):6s} "
              f"{settings_tag(run.config) or 'reference'}")
    for rid, why in problems.items():
        print(f"unreadable: {rid}: {why}", file=sys.stderr)
    for run in runs:
        try:
            run.verify()
        except StoreError as e:
            print(f"damaged: {e}", file=sys.stderr)
    for info in store.active():
        print(f"{info['run_id']:48s} training (pid {info['pid']})")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parser().parse_args(argv)
    a.argv = argv
    signal.signal(signal.SIGTERM, on_sigterm)
    if getattr(a, "store", None):  # this store's user datasets, for this process and its workers
        data = str(Path(a.store).resolve() / "data")
        os.environ["DUALSCALE_DATA"] = os.pathsep.join(filter(None, [data, os.environ.get("DUALSCALE_DATA")]))
    from .sweeps import SweepLost

    try:
        return {"train": cmd_train, "reproduce": cmd_reproduce, "settle": cmd_settle, "verdict": cmd_verdict,
                "rescore": cmd_rescore,
                "export": cmd_export,
                "list": cmd_list}[a.command](a)
    except (Cancelled, KeyboardInterrupt):
        print(f"cancelled; {kept()}", file=sys.stderr)
        return EXIT_CANCELLED
    except RunInProgress as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except (TrainingFailed, SweepLost) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:  # the estimate let it through, the machine did not: nothing was stored
        print(f"error: out of memory; lower steps, n_points or n_samples ({kept()})", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `verdict --json | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except OSError as e:  # a full disk, a vanished folder: the store's writes are atomic, nothing is half-written
        print(f"error: {e.strerror or e}{f' ({e.filename})' if e.filename else ''}; {kept()}", file=sys.stderr)
        return EXIT_FAILED


def kept() -> str:
    """What an interrupted command leaves: the runs it finished are stored whole, the one in flight is not."""
    if not STORED:
        return "nothing was stored"
    return (f"the {len(STORED)} run(s) finished before it are stored and kept (the same command resumes: "
            "stored runs are loaded, not retrained)")


if __name__ == "__main__":
    sys.exit(main())
