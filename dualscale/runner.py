"""The dashboard's background runs: worker processes, a queue, one cancel path. (Command-line
sweeps go through joblib, sweeps.py, or stack in one process, stack_sweep.py.)

Every dashboard run trains in its own worker process,
`python -m dualscale train --config JSON ...`, never inside the caller: a page script is stopped
when the user switches page or reloads the browser, a separate process keeps the UI responsive on
2 cores, and a sweep's runs get one core each. The Runner starts at most `jobs` workers at once
(the rest wait in its queue), gives each the thread count of system.threads_per_worker, and
cancels a run in one way: SIGTERM to its worker, which records "cancelled" and stores nothing.

Everything a caller shows is read back from the store (Store.active(), Store.progress()), so a
reloaded browser, another session or a restarted server sees the same runs. No streamlit here:
the dashboard holds one Runner per store in st.cache_resource.
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

from . import events
from .config import TrainConfig
from .events import EXIT_OK
from .store import Store, is_our_worker
from .system import lower_priority, threads_per_worker

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def worker_args(cfg: TrainConfig, store_root: str | os.PathLike, device: str = "auto", threads: int = 1,
                force: bool = False, previews: int = 0, half: bool = False) -> list[str]:
    """The command line of a worker that trains `cfg` into `store_root` (the config as JSON)."""
    args = [sys.executable, "-m", "dualscale", "train", "--config", cfg.to_json(), "--store", str(store_root),
            "--device", device, "--previews", str(previews), "--threads", str(threads)]
    return args + (["--force"] if force else []) + (["--half"] if half else [])


@dataclass(frozen=True)
class JobStatus:
    """What a page shows about one run, summarised from its progress events."""
    run_id: str
    state: str                    # queued | starting | running | evaluating | done | failed | cancelled
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
    phase: str | None = None      # the evaluation phase under way (state evaluating)
    phase_index: int = 0          # its 1-based place among events.PHASES
    started: float | None = None  # when this attempt began (its "started" stamp)
    malformed: int = 0            # lines of the progress file that were not well-formed events (ignored)
    phase_time: float | None = None  # when the current evaluation phase began (wall clock)
    launched: float | None = None    # when its worker process was started (wall clock): elapsed counts from here

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    @property
    def finished(self) -> bool:
        return self.state in events.FINAL


def _rate(progress: list[dict], window: int = 10) -> float | None:
    """Steps per second over the last `window` events: the current speed, not the mean."""
    if not progress:
        return None
    last = progress[-1]
    first = progress[-1 - window] if len(progress) > window else {"step": 0, "elapsed": 0.0}
    dt = last["elapsed"] - first["elapsed"]
    return (last["step"] - first["step"]) / dt if dt > 0 else None


def summarize(run_id: str, evs: list[dict], alive: bool, malformed: int = 0) -> JobStatus:
    """Fold a run's events into a JobStatus; `alive` says whether its worker still runs."""
    progress = [e for e in evs if e.get("event") == events.PROGRESS]
    final = next((e for e in reversed(evs) if e.get("event") in events.FINAL), None)
    last = progress[-1] if progress else {}
    rate = _rate(progress)
    total, step = int(last.get("total", 0)), int(last.get("step", 0))
    evaluating = any(e.get("event") == events.EVALUATING for e in evs)
    state = final["event"] if final else ("evaluating" if evaluating else
                                          "running" if progress else "starting")
    if not final and not alive:
        state = "unknown"  # the caller decides whether that is a failure (it knows the exit code)
    phases = [e for e in evs if e.get("event") == events.PHASE]
    alphas = [e["alpha"] for e in progress if e.get("alpha") is not None]
    previews = [e["preview"] for e in progress if e.get("preview") is not None]
    return JobStatus(
        run_id=run_id, state=state, step=step, total=total,
        elapsed=float(last.get("elapsed", 0.0)), steps_per_s=rate,
        eta_s=(total - step) / rate if rate and total else None,
        steps=[e["step"] for e in progress], losses=[e["loss"] for e in progress],
        alpha=alphas[-1] if alphas else None, preview=previews[-1] if previews else None,
        error=final.get("error") if final and final["event"] == events.FAILED else None,
        metrics={k: v for k, v in final.items() if k != "event"} if final and final["event"] == events.DONE else None,
        phase=phases[-1]["name"] if phases else None, phase_index=int(phases[-1]["index"]) if phases else 0,
        started=evs[0].get("time") if evs and evs[0].get("event") == events.STARTED else None,
        malformed=malformed, phase_time=_number(phases[-1].get("time")) if phases else None,
    )


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class _Worker:
    """A worker this runner started: its process and the anonymous files holding its output."""
    proc: subprocess.Popen
    stdout: object
    stderr: object
    started: float
    config: TrainConfig

    def last_line(self, stream) -> str | None:
        # Temp files, not pipes: an unread pipe fills up and blocks the worker.
        stream.seek(0)
        lines = [ln.strip() for ln in stream.read().decode(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        return lines[-1] if lines else None

    def error_line(self) -> str | None:
        line = self.last_line(self.stderr)
        line = line[len("error: "):] if line and line.startswith("error: ") else line
        return line[:300] if line else None


class Runner:
    """The background runs of one store. Thread-safe: every dashboard session shares one.

    jobs: workers at once (None: no limit); reserve: cores left to the caller (the dashboard keeps
    one for its server); niceness: the workers' priority (the dashboard lowers it).
    """

    def __init__(self, store: Store, device: str = "auto", jobs: int | None = None, reserve: int = 0,
                 niceness: int = 0, previews: int = 0, half: bool = False, env: dict | None = None):
        self.store, self.device, self.jobs = store, device, jobs
        self.threads = threads_per_worker(jobs or 1, reserve)
        self.niceness, self.previews, self.half, self.env = niceness, previews, half, env
        self._workers: dict[str, _Worker] = {}
        self._queue: list[tuple[TrainConfig, bool]] = []
        self._cancelled: set[str] = set()  # runs whose worker we asked to stop
        self._lock = threading.RLock()
        self.note: str | None = None  # a line about how it was set up (a bad DUALSCALE_WORKERS), for the page

    # ---- starting ------------------------------------------------------------------------
    def submit(self, cfg: TrainConfig, force: bool = False) -> str:
        """Queue `cfg` unless it already runs or waits; start what the free slots allow; return its id."""
        cfg = cfg.validate()
        with self._lock:  # two clicks (or two sessions) at once must not start two workers
            if cfg.run_id not in self.running_ids() and cfg.run_id not in self.queued_ids():
                self._queue.append((cfg, force))
            self.pump()
        return cfg.run_id

    def pump(self) -> None:
        with self._lock:
            while self._queue and (self.jobs is None or self._alive_count() < self.jobs):
                cfg, force = self._queue.pop(0)
                self._cancelled.discard(cfg.run_id)  # a new attempt
                self._workers[cfg.run_id] = self._spawn(cfg, force)

    def _alive_count(self) -> int:
        return sum(w.proc.poll() is None for w in self._workers.values())

    def _spawn(self, cfg: TrainConfig, force: bool) -> _Worker:
        env = {**os.environ, **(self.env or {}), "TQDM_DISABLE": "1"}  # progress goes to the store
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        args = worker_args(cfg, Path(self.store.root).resolve(), self.device, self.threads, force,
                           self.previews, self.half)
        proc = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)  # its own group: a Ctrl-C on the caller is not its
        if self.niceness:
            lower_priority(proc.pid, self.niceness)
        return _Worker(proc, out, err, time.time(), cfg)

    # ---- watching ------------------------------------------------------------------------
    def queued(self) -> list[TrainConfig]:
        """The runs waiting for a free slot, first to start first."""
        with self._lock:
            return [cfg for cfg, _ in self._queue]

    def queued_ids(self) -> list[str]:
        return [cfg.run_id for cfg in self.queued()]

    def running_ids(self) -> set[str]:
        """Run ids training now: ours (still alive) plus any the store lists as active."""
        ours = {rid for rid, w in self._workers.items() if w.proc.poll() is None}  # poll() reaps
        return ours | {a["run_id"] for a in self.store.active()}

    def running(self) -> list[dict]:
        """Active runs as {run_id, config (dict), pid, started}, ours first even before they lock."""
        self.pump()
        active = {a["run_id"]: a for a in self.store.active()}
        for rid, w in self._workers.items():
            if w.proc.poll() is None and rid not in active:
                active[rid] = {"run_id": rid, "config": w.config.to_dict(), "pid": w.proc.pid,
                               "started": w.started}
        return sorted(active.values(), key=lambda a: a.get("started") or 0)

    def status(self, run_id: str) -> JobStatus:
        """Where `run_id` is now; a worker that died without a final event counts as failed."""
        if run_id in self.queued_ids():
            return JobStatus(run_id, "queued")
        worker = self._workers.get(run_id)
        alive = run_id in self.running_ids()
        evs, bad = self._current_events(run_id, worker)
        launched = worker.started if worker else next(
            (a.get("started") for a in self.store.active() if a["run_id"] == run_id), None)
        status = dataclasses.replace(summarize(run_id, evs, alive, bad), launched=_number(launched))
        if status.state != "unknown":
            return status
        if run_id in self._cancelled:  # stopped before its handler could record it (still starting up)
            return dataclasses.replace(status, state=events.CANCELLED)
        stored = self._stored_metrics(run_id)
        if stored is not None and (worker is None or worker.proc.poll() == EXIT_OK):
            # The worker found the config already stored and loaded it: no events, a result.
            return dataclasses.replace(status, state=events.DONE, metrics=stored)
        return dataclasses.replace(status, state=events.FAILED, error=self._death_note(worker))

    def _current_events(self, run_id: str, worker: _Worker | None) -> tuple[list[dict], int]:
        """(the run's events, malformed lines), unless they are an earlier attempt's: a new worker
        restarts the file (with a "started" stamp) only once it runs, and until then the previous
        attempt's end (done, failed) must not be shown as this attempt's."""
        started = worker.started if worker else next(
            (a.get("started") for a in self.store.active() if a["run_id"] == run_id), None)
        evs, bad = self.store.progress_report(run_id)
        if started is None or not evs:
            return evs, bad
        stamp = evs[0].get("time", 0) if evs[0].get("event") == events.STARTED else 0
        return (evs, bad) if stamp >= started else ([], 0)

    def _stored_metrics(self, run_id: str) -> dict | None:
        try:
            return dict(self.store.get(run_id).metrics)
        except ValueError:  # StoreError: not stored (or unreadable)
            return None

    def _death_note(self, worker: _Worker | None) -> str:
        if worker is None:
            return "the worker stopped without a result (killed?); start it again"
        code = worker.proc.poll()
        if code is not None and code < 0:
            return f"the worker was killed by signal {-code}; start it again"
        return worker.error_line() or f"the worker exited with code {code} and no result"

    def recent(self, n: int = 10) -> list[JobStatus]:
        """The latest attempts in this store (any process, any session), newest first, with their
        outcome: done, failed, cancelled, or still running."""
        folder = Path(self.store.root) / "progress"
        files = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)[:n] if folder.is_dir() else []
        running = self.running_ids()
        out = []
        for path in files:
            evs, bad = self.store.progress_report(path.stem)
            status = summarize(path.stem, evs, path.stem in running, bad)
            out.append(dataclasses.replace(status, state="stopped") if status.state == "unknown" else status)
        return out

    # ---- stopping ------------------------------------------------------------------------
    def cancel(self, run_id: str) -> bool:
        """Drop a queued run, or ask its worker to stop (SIGTERM: it records 'cancelled')."""
        with self._lock:
            queued = [q for q in self._queue if q[0].run_id == run_id]
            for q in queued:
                self._queue.remove(q)
            if queued:
                self._cancelled.add(run_id)  # it never started: its status reads cancelled, not failed
        if queued:
            return True
        worker = self._workers.get(run_id)
        if worker is not None and worker.proc.poll() is None:
            self._cancelled.add(run_id)
            worker.proc.terminate()
            return True
        for a in self.store.active():  # started by another server process, or before a restart
            if a["run_id"] == run_id and is_our_worker(a):  # never a process that merely reuses the PID
                try:
                    os.kill(int(a["pid"]), signal.SIGTERM)
                    return True
                except (ProcessLookupError, PermissionError):
                    return False
        return False

    def stop_all(self, timeout: float = 10.0) -> None:
        """Empty the queue, cancel every worker this runner started and wait for them."""
        with self._lock:
            self._queue.clear()
        for w in self._workers.values():
            if w.proc.poll() is None:
                w.proc.terminate()
        for w in self._workers.values():
            try:
                w.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
