"""What runs report while they go: one kind of event, a plain dict {"event": NAME, ...} named here.

`train()` yields Progress, whose to_event() is the PROGRESS dict; a single run (`runs.run_config`)
adds the evaluation's phases and DONE, a sweep (`sweeps.sweep`, `stack_sweep.run_stacks`) yields
PROGRESS (stacked) and a DONE per stored run. The store keeps a run's events as JSON lines (one
file per run) and every viewer (the CLI's bars, the dashboard) reads the same names from here.
"""
from __future__ import annotations

from dataclasses import dataclass

STARTED = "started"        # first line of an attempt's progress file: {"time", "pid"}
PROGRESS = "progress"      # a Progress, as a dict
EVALUATING = "evaluating"  # training is over; the phases below follow
PHASE = "phase"            # {"name": one of PHASES, "index": 1-based}: an evaluation phase begins
PHASES = ("eval loss", "sampling", "oracle sampling", "metrics", "saving")
DONE = "done"              # {"run_id", "cached", "path", <metrics>}
FAILED = "failed"          # {"error": one line}
CANCELLED = "cancelled"
FINAL = (DONE, FAILED, CANCELLED)

# How a run's process ends: the exit codes of `python -m dualscale` (and so of every worker).
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_LOCKED, EXIT_CANCELLED = 0, 1, 2, 3, 130


class Cancelled(Exception):
    """Raised inside a run when its worker is asked to stop (SIGTERM, Ctrl-C)."""


class TrainingFailed(RuntimeError):
    """The run cannot go on (a non-finite loss); the message is one line for the user."""


@dataclass(frozen=True)
class Progress:
    step: int                 # optimizer steps done
    total: int
    loss: float               # mean training loss since the previous event
    lr: float
    elapsed: float            # training seconds so far (previews excluded)
    alpha: tuple | None = None    # alpha(t) for t = 0..T-1 (dual models), sometimes
    preview: tuple | None = None  # a few sampled points ((x, y), ...), sometimes

    def to_event(self) -> dict:
        """The JSON-line form, without the fields that are None."""
        fields = {k: v for k, v in self.__dict__.items() if v is not None}
        return {"event": PROGRESS, **fields}


_NUMBER = (int, float)
# What each event must carry, name -> type: a progress file line that does not fit is ignored.
SCHEMA = {STARTED: {"time": _NUMBER, "pid": int},
          PROGRESS: {"step": int, "total": int, "loss": _NUMBER, "lr": _NUMBER, "elapsed": _NUMBER},
          EVALUATING: {}, PHASE: {"name": str, "index": int, "of": int},
          DONE: {"run_id": str, "path": str}, FAILED: {"error": str}, CANCELLED: {}}


def done_event(run, cached: bool) -> dict:
    """DONE for a stored run (a store.Run): its id, whether it was stored before, its folder, its metrics."""
    return {"event": DONE, "run_id": run.id, "cached": cached, "path": str(run.path), **run.metrics}


def well_formed(event) -> bool:
    """Whether a decoded progress line is an event a viewer can use (its keys and their types)."""
    if not isinstance(event, dict) or event.get("event") not in SCHEMA:
        return False
    for key, kind in SCHEMA[event["event"]].items():
        value = event.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return False
    if event["event"] == PROGRESS:
        alpha, preview = event.get("alpha"), event.get("preview")
        if alpha is not None and not (isinstance(alpha, list) and all(_number(a) for a in alpha)):
            return False
        if preview is not None and not (isinstance(preview, list) and all(
                isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p) for p in preview)):
            return False
    return True


def _number(v) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


def drain(gen):
    """Run a generator to its end, ignoring what it yields; return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as end:
            return end.value


def relay(gen, f):
    """Yield f(item) for each item `gen` yields; return gen's return value (`yield from` would pass
    the items on unchanged): `result = yield from relay(gen, f)`."""
    while True:
        try:
            item = next(gen)
        except StopIteration as end:
            return end.value
        yield f(item)
