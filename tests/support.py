"""Helpers the tests (and tests/app/screenshots.py) import: the project root, the small test
runs and how to build, copy and clean a store of them. The fixtures built on them live in
conftest.py.

Real runs through the engine (train -> evaluate -> store), with settings small enough to take
seconds: the dashboard is tested against the same files a user's store holds.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from dualscale import Store, TrainConfig  # first: it sets torch's OpenMP wait policy before torch loads
from dualscale.runs import run_config

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The settings of every test run: a few seconds each on 2 CPU cores.
SMALL = dict(steps=150, n_points=2000, batch_size=128, n_samples=500)
RUNS = [("moons", "baseline", 0), ("moons", "baseline", 1), ("moons", "fixed", 0), ("moons", "adaptive", 0),
        ("moons", "adaptive", 1), ("circle", "adaptive", 0)]


def small_config(dataset: str, variant: str, seed: int, **over) -> TrainConfig:
    return TrainConfig(dataset=dataset, variant=variant, seed=seed, **{**SMALL, **over})


def build_store(root: Path) -> Path:
    """Train RUNS into root (in this process: no interpreter start-up per run).

    One torch thread: these models are tiny, and two threads spin-waiting on a 2-core machine
    that is also running something else made this 20x slower (measured).
    """
    store, threads = Store(root), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for dataset, variant, seed in RUNS:
            for _ in run_config(small_config(dataset, variant, seed), store, device="cpu"):
                pass
    finally:
        torch.set_num_threads(threads)
    return root


def copy_store(src: Path, dst: Path) -> Path:
    """A private, writable copy (tests that train must not change the shared store)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("locks", "progress"))
    return dst


def stop_workers(root: Path, timeout: float = 10.0) -> None:
    """SIGTERM every worker still training into root (a failed test must not leave one)."""
    pids = [a["pid"] for a in Store(root).active()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout
    while Store(root).active() and time.time() < deadline:
        time.sleep(0.2)


# ---- a store with one run of each kind of damage (issue 20) ----------------------------------
DAMAGED_SEEDS = {"created null": 100, "created list": 101, "created text": 102, "nested": 103, "edited": 104,
                 "fifo": 105, "unreadable": 106, "stranded": 107}


def damaged_store(src: Path, dst: Path) -> dict:
    """A copy of the small store plus, beside its good runs, one run of each kind of damage (copies of
    moons/baseline/s0 under other seeds): run.json with a 'created' of null, [1] or 'yesterday'
    (written as a faulty writer would, digest and all), nesting 30,000 deep, a metric edited in
    place, a FIFO in place of arrays.npz, a folder its user cannot read (mode 000: binds a user
    other than root), a complete run stranded in .tmp-... by a kill mid-replace, a shipped copy
    of a local run (one id, two folders) and a malformed progress file. Returns {kind: run id}."""
    import json as _json

    from dualscale.store import _digest

    root = copy_store(src, dst)
    good = Store(root).find(small_config("moons", "baseline", 0))
    out = {}

    def clone(kind: str, edit=None, where: Path | None = None) -> Path:
        cfg = small_config("moons", "baseline", DAMAGED_SEEDS[kind])
        path = (where or root) / cfg.run_id
        shutil.copytree(good.path, path)
        meta = _json.loads((path / "run.json").read_text())
        meta.pop("digest", None)
        meta.update(config=cfg.to_dict(), id=cfg.run_id)
        if edit:
            edit(meta)
        (path / "run.json").write_text(_json.dumps({**meta, "digest": _digest(meta)}))
        out[kind] = cfg.run_id
        return path

    clone("created null", lambda m: m.update(created=None))
    clone("created list", lambda m: m.update(created=[1]))
    clone("created text", lambda m: m.update(created="yesterday"))
    (clone("nested") / "run.json").write_text("[" * 30_000 + "]" * 30_000)
    edited = clone("edited")
    meta = _json.loads((edited / "run.json").read_text())
    meta["metrics"]["kl_divergence"] = 0.0001  # in place, digest unchanged
    (edited / "run.json").write_text(_json.dumps(meta))
    fifo = clone("fifo")
    (fifo / "arrays.npz").unlink()
    os.mkfifo(fifo / "arrays.npz")
    os.chmod(clone("unreadable"), 0)
    stranded = clone("stranded")
    os.replace(stranded, root / f".tmp-{out['stranded']}-k1ll3d")
    (root / "reference").mkdir(exist_ok=True)
    shutil.copytree(good.path, root / "reference" / good.id)  # a local run of a shipped id
    out["duplicate"] = good.id
    progress = Store(root).progress_path(out["created text"])
    progress.parent.mkdir(exist_ok=True)
    progress.write_bytes(b'{"event": "started", "time": 1.0, "pid": 1}\n[1, 2]\n{"event": "progress"}\n'
                         b'\xff\xfe not utf-8\n{"event": "progress", "step": "3", "total": 9, "loss": 1, "lr": 1, '
                         b'"elapsed": 1}\n{"event": "progress", "step": 3, "total": 9, "loss": 0.5, "lr": 0.1, "elapsed": 2.0}\n')
    return out


def write_run_json(run_dir: Path, meta: dict) -> None:
    """Write run.json with a digest that matches (as a faulty or older writer would): the edit is then
    judged on its content, not caught as an edit in place."""
    import json as _json

    from dualscale.store import _digest

    meta = {k: v for k, v in meta.items() if k != "digest"}
    (Path(run_dir) / "run.json").write_text(_json.dumps({**meta, "digest": _digest(meta)}))


def wait_until(predicate, timeout: float, what: str, page=None):
    """predicate()'s first true value within timeout seconds, else an AssertionError naming what was
    awaited (with the page's text, for a browser test)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}" +
                         (f"; page says: {page.inner_text('body')[:1500]}" if page else ""))


def figure(at, key: str) -> dict:
    """The Plotly figure (as a dict) of an AppTest's chart with this key."""
    import json

    (chart,) = [c for c in at.get("plotly_chart") if c.proto.id.endswith("-" + key)]
    return json.loads(chart.proto.spec)


def values(field):
    """A trace's x or y: a list, or Plotly's base64 binary form {"bdata", "dtype"}."""
    import base64

    import numpy as np

    if isinstance(field, dict):
        return np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"])
    return np.asarray(field, dtype=float)
