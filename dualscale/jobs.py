"""Background training runs for the dashboard: start, watch, cancel, dedupe.

A run trains in its own worker process (`python -m dualscale train ...`), never inside a page
script: a page script is stopped when the user switches page or reloads the browser, and a
separate process keeps the UI responsive on 2 cores. The registry keeps only the process
handles (to reap them and to read a worker's exit code); everything a page shows is read back
from the store (`Store.active()`, `Store.progress()`), so a reloaded browser, another session
or a restarted server sees the same runs.

No streamlit here: the dashboard holds one `JobRegistry` per store in `st.cache_resource`.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig

# Exit codes of `python -m dualscale train` (see __main__.py).
EXIT_BAD_INPUT, EXIT_FAILED, EXIT_LOCKED = 2, 1, 3
FINAL_EVENTS = ("done", "failed", "cancelled")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREVIEWS = 10  # progress events that carry alpha(t) and a few samples (~0.1 s each on a CPU)


def cli_args(cfg: TrainConfig, store_root: str | os.PathLike, device: str = "auto",
             force: bool = False, previews: int = PREVIEWS) -> list[str]:
    """The command line that trains `cfg` into `store_root` (every setting spelled out)."""
    # All cores but one for torch: the server keeps a core, and no torch thread spin-waits for a
    # core the server holds (on 2 cores, two threads made training many times slower: measured).
    threads = max(1, (os.cpu_count() or 2) - 1)
    args = [sys.executable, "-m", "dualscale", "train", "--store", str(store_root),
            "--device", device, "--previews", str(previews), "--threads", str(threads)]
    for f in dataclasses.fields(cfg):
        args += [f"--{f.name.replace('_', '-')}", str(getattr(cfg, f.name))]
    return args + (["--force"] if force else [])


@dataclass(frozen=True)
class JobStatus:
    """What a page shows about one run, summarised from its progress events."""
    run_id: str
    state: str                    # starting | running | evaluating | done | failed | cancelled
    step: int = 0
    total: int = 0
    elapsed: float = 0.0          # seconds of training so far
    steps_per_s: float | None = None
    eta_s: float | None = None
    steps: list = field(default_factory=list)    # step of each progress event
    losses: list = field(default_factory=list)   # loss of each progress event
    alpha: list | None = None     # latest alpha(t) preview (adaptive only)
    preview: list | None = None   # latest sample preview, [[x, y], ...]
    error: str | None = None      # one line, for state failed
    metrics: dict | None = None   # the final metrics, for state done

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    @property
    def finished(self) -> bool:
        return self.state in FINAL_EVENTS


def _rate(progress: list[dict], window: int = 10) -> float | None:
    """Steps per second over the last `window` events: the current speed, not the mean."""
    if not progress:
        return None
    last = progress[-1]
    first = progress[-1 - window] if len(progress) > window else {"step": 0, "elapsed": 0.0}
    dt = last["elapsed"] - first["elapsed"]
    return (last["step"] - first["step"]) / dt if dt > 0 else None


def summarize(run_id: str, events: list[dict], alive: bool) -> JobStatus:
    """Fold a run's events into a JobStatus; `alive` says whether its worker still runs."""
    progress = [e for e in events if e.get("event") == "progress"]
    final = next((e for e in reversed(events) if e.get("event") in FINAL_EVENTS), None)
    last = progress[-1] if progress else {}
    rate = _rate(progress)
    total, step = int(last.get("total", 0)), int(last.get("step", 0))
    evaluating = any(e.get("event") == "evaluating" for e in events)
    state = final["event"] if final else ("evaluating" if evaluating else
                                          "running" if progress else "starting")
    if not final and not alive:
        state = "unknown"  # the caller decides whether that is a failure (it knows the exit code)
    alphas = [e["alpha"] for e in progress if e.get("alpha") is not None]
    previews = [e["preview"] for e in progress if e.get("preview") is not None]
    return JobStatus(
        run_id=run_id, state=state, step=step, total=total,
        elapsed=float(last.get("elapsed", 0.0)), steps_per_s=rate,
        eta_s=(total - step) / rate if rate and total else None,
        steps=[e["step"] for e in progress], losses=[e["loss"] for e in progress],
        alpha=alphas[-1] if alphas else None, preview=previews[-1] if previews else None,
        error=final.get("error") if final and final["event"] == "failed" else None,
        metrics={k: v for k, v in final.items() if k != "event"} if final and final["event"] == "done" else None,
    )


@dataclass
class _Worker:
    """A worker this registry started: its process and the anonymous file holding its stderr."""
    proc: subprocess.Popen
    stderr: object
    started: float
    config: TrainConfig

    def last_error_line(self) -> str | None:
        # stderr goes to a temp file, not a pipe: an unread pipe fills up and blocks the worker.
        self.stderr.seek(0)
        lines = [ln.strip() for ln in self.stderr.read().decode(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        return lines[-1][:300] if lines else None


class JobRegistry:
    """The background runs of one store. Thread-safe: every dashboard session shares one."""

    def __init__(self, store, device: str = "auto", env: dict | None = None):
        self.store = store
        self.device = device
        self.env = env
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()

    def start(self, cfg: TrainConfig, force: bool = False) -> str:
        """Start training `cfg` unless it already runs; return its run id either way."""
        cfg = cfg.validate()
        with self._lock:  # two clicks (or two sessions) at once must not start two workers
            if cfg.run_id in self.running_ids():
                return cfg.run_id
            self._workers[cfg.run_id] = self._spawn(cfg, force)
        return cfg.run_id

    def _spawn(self, cfg: TrainConfig, force: bool) -> _Worker:
        env = {**os.environ, **(self.env or {}), "TQDM_DISABLE": "1"}  # progress goes to the store
        err = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            cli_args(cfg, Path(self.store.root).resolve(), self.device, force),
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=err, start_new_session=True)  # its own group: a Ctrl-C on the server is not its
        _lower_priority(proc.pid)
        return _Worker(proc, err, time.time(), cfg)

    def running_ids(self) -> set[str]:
        """Run ids training now: ours (still alive) plus any the store lists as active."""
        ours = {rid for rid, w in self._workers.items() if w.proc.poll() is None}  # poll() reaps
        return ours | {a["run_id"] for a in self.store.active()}

    def running(self) -> list[dict]:
        """Active runs as {run_id, config (dict), pid, started}, ours first even before they lock."""
        active = {a["run_id"]: a for a in self.store.active()}
        for rid, w in self._workers.items():
            if w.proc.poll() is None and rid not in active:
                active[rid] = {"run_id": rid, "config": w.config.to_dict(), "pid": w.proc.pid,
                               "started": w.started}
        return sorted(active.values(), key=lambda a: a.get("started") or 0)

    def status(self, run_id: str) -> JobStatus:
        """Where `run_id` is now; a worker that died without a final event counts as failed."""
        worker = self._workers.get(run_id)
        alive = run_id in self.running_ids()
        status = summarize(run_id, self._current_events(run_id, worker), alive)
        if status.state != "unknown":
            return status
        stored = self._stored_metrics(run_id)
        if stored is not None and (worker is None or worker.proc.poll() == 0):
            # The worker found the config already stored and loaded it: no events, a result.
            return dataclasses.replace(status, state="done", metrics=stored)
        return dataclasses.replace(status, state="failed", error=self._death_note(worker))

    def _current_events(self, run_id: str, worker: _Worker | None) -> list[dict]:
        """The run's events, unless they are an earlier attempt's: a new worker restarts the
        file (with a "started" stamp) only once it runs, and until then the previous attempt's
        end (done, failed) must not be shown as this attempt's."""
        started = worker.started if worker else next(
            (a.get("started") for a in self.store.active() if a["run_id"] == run_id), None)
        events = self.store.progress(run_id)
        if started is None or not events:
            return events
        stamp = events[0].get("time", 0) if events[0].get("event") == "started" else 0
        return events if stamp >= started else []

    def _stored_metrics(self, run_id: str) -> dict | None:
        try:
            return dict(self.store.get(run_id).metrics)
        except ValueError:  # StoreError: not stored (or unreadable)
            return None

    def _death_note(self, worker: _Worker | None) -> str:
        if worker is None:
            return "the worker stopped without a result (killed?); start it again"
        code = worker.proc.poll()
        line = worker.last_error_line()
        if code is not None and code < 0:
            return f"the worker was killed by signal {-code}; start it again"
        return line or f"the worker exited with code {code} and no result"

    def cancel(self, run_id: str) -> bool:
        """Ask the worker to stop (SIGTERM: it cleans up and records 'cancelled')."""
        worker = self._workers.get(run_id)
        if worker is not None and worker.proc.poll() is None:
            worker.proc.terminate()
            return True
        for a in self.store.active():  # started by another server process, or before a restart
            if a["run_id"] == run_id and a.get("pid"):
                try:
                    os.kill(int(a["pid"]), signal.SIGTERM)
                    return True
                except (ProcessLookupError, PermissionError):
                    return False
        return False

    def stop_all(self, timeout: float = 10.0) -> None:
        """Cancel every worker this registry started and wait for them (tests, shutdown)."""
        for w in self._workers.values():
            if w.proc.poll() is None:
                w.proc.terminate()
        for w in self._workers.values():
            try:
                w.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                w.proc.kill()


def _lower_priority(pid: int) -> None:
    """Nice the worker so the server's threads win the 2 cores: the UI stays responsive."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 10)
    except (AttributeError, OSError):  # not on every platform; a slower UI is no error
        pass
