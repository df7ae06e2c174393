"""One run end to end: config -> train -> evaluate -> store, as a stream of event dicts.

Shared by the command line and the dashboard's worker, so both train, measure and store the
same way. Events are plain dicts (JSON lines in the store's progress file):
  {"event": "progress", "step", "total", "loss", "lr", "elapsed", ["alpha"], ["preview"]}
  {"event": "evaluating"}
  {"event": "done", "run_id", "cached", <metrics>}
  {"event": "failed", "error"} / {"event": "cancelled"}
"""
from __future__ import annotations

import dataclasses

import torch

from .config import TrainConfig
from .evaluate import evaluate
from .store import Run, Store
from .train import Progress, Trained, train

DEVICES = ("auto", "cpu", "cuda", "mps")


class Cancelled(Exception):
    """Raised inside a run when its worker is asked to stop (SIGTERM, Ctrl-C)."""


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda, then mps, then cpu; a device this machine lacks is a ValueError."""
    base = name.split(":")[0]
    if base not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' is not available on this machine (no CUDA GPU); use --device cpu")
    if base == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' is not available on this machine; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"bad device {name!r}: {e}")


def round_to_half(model: torch.nn.Module) -> None:
    """Round weights through float16, so metrics describe exactly what a half-precision store keeps."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def run_config(config: TrainConfig, store: Store, device: str = "auto", force: bool = False,
               previews: int = 0, half: bool = False, every: int | None = None):
    """Train, evaluate and store `config`, yielding event dicts; a stored config is loaded instead."""
    config.validate()
    dev = resolve_device(device)
    if not force:
        found = store.find(config)
        if found is not None:
            yield done_event(found, cached=True)
            return
    store.check_writable()
    with store.lock(config):
        store.start_progress(config.run_id)
        try:
            run = yield from _train_and_store(config, store, dev, previews, half, every)
        except BaseException as e:  # record why, then let the caller handle it
            cancelled = isinstance(e, (Cancelled, KeyboardInterrupt, GeneratorExit))
            store.append_progress(config.run_id, {"event": "cancelled"} if cancelled else
                                  {"event": "failed", "error": str(e).splitlines()[0] if str(e) else repr(e)})
            raise
        event = done_event(run, cached=False)
        store.append_progress(config.run_id, event)
        yield event


def _train_and_store(config, store, dev, previews, half, every):
    trained = None
    for event in train(config, dev, every=every, previews=previews):
        if isinstance(event, Progress):
            ev = {"event": "progress", **{k: v for k, v in dataclasses.asdict(event).items() if v is not None}}
            store.append_progress(config.run_id, ev)
            yield ev
        elif isinstance(event, Trained):
            trained = event
    store.append_progress(config.run_id, {"event": "evaluating"})
    yield {"event": "evaluating"}
    if half:
        round_to_half(trained.model)
        round_to_half(trained.ema)
    ev = evaluate(trained, config.n_samples)
    metrics = {**ev.metrics, "device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__}
    arrays = {"samples": ev.samples, "alpha": ev.alpha, "losses": trained.losses.astype("float32"),
              "traj_t": ev.traj_t, "trajectory": ev.trajectory}
    weights = {"online": trained.model.state_dict(), "ema": trained.ema.state_dict()}
    return store.save(config, weights, metrics, arrays, half=half)


def done_event(run: Run, cached: bool) -> dict:
    return {"event": "done", "run_id": run.id, "cached": cached, "path": str(run.path), **run.metrics}
