"""The run store: one folder per run under a root (default checkpoints/), keyed by config hash.

The only module that writes files. A run folder appears under its final name only when every
file in it is written (it is built in a temporary folder, then renamed), so a run killed
half-way never looks finished. Loads read JSON and numpy arrays with allow_pickle=False: no
object is ever unpickled. Shipped runs live in <root>/reference/ and are read like local ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TrainConfig

FORMAT = "dualscale-run/1"
FILES = ("weights.npz", "arrays.npz")
LIGHT_FILES = ("arrays.npz",)  # a light run: samples, alpha(t), loss history and metrics; no weights, no trajectory


class StoreError(ValueError):
    """A store problem the user can act on (corrupt or foreign run, unwritable folder)."""


class RunInProgress(RuntimeError):
    """The same config is already being trained by a live process."""


@dataclass
class Run:
    id: str
    config: TrainConfig
    metrics: dict
    path: Path
    is_reference: bool
    created: float
    made: dict = field(default_factory=dict)  # how the run was made (device, threads, torch, half, command)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def light(self) -> bool:
        """Shipped without weights and trajectory (seeds past 0 of the reference runs)."""
        return "weights.npz" not in self._files()

    def _files(self) -> dict:
        return _read_json(self.path / "run.json")["files"]

    def _arrays(self, name: str) -> dict:
        if name not in self._cache:  # verified once per Run object, then served from memory
            self._cache[name] = _load_npz(self.path / name, self.meta_hash(name))
        return self._cache[name]

    def meta_hash(self, name: str) -> str:
        return _read_json(self.path / "run.json")["files"][name]

    def samples(self) -> np.ndarray:
        return self._arrays("arrays.npz")["samples"].astype(np.float32)

    def alpha(self) -> np.ndarray | None:
        arrays = self._arrays("arrays.npz")
        return arrays["alpha"] if "alpha" in arrays else None

    def loss_history(self) -> np.ndarray:
        return self._arrays("arrays.npz")["losses"]

    def trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(frame labels, (T+1, P, 2) points) of the reverse process; None for a light run."""
        arrays = self._arrays("arrays.npz")
        if "trajectory" not in arrays:
            return None
        return arrays["traj_t"], arrays["trajectory"].astype(np.float32)

    def state_dicts(self) -> dict[str, dict[str, "torch.Tensor"]]:
        """{"online": state_dict, "ema": state_dict} as float32 tensors."""
        import torch  # lazy: reading tables and samples (the dashboard) needs no torch

        if "weights.npz" not in self._files():
            raise StoreError(f"run {self.id} ships without weights (a light run); retrain it to get a model")
        out: dict[str, dict] = {"online": {}, "ema": {}}
        for key, value in self._arrays("weights.npz").items():
            which, name = key.split("/", 1)
            out[which][name] = torch.from_numpy(value.astype(np.float32))
        return out

    def load_model(self, which: str = "ema"):
        from .models import build_model

        model = build_model(self.config)
        try:
            model.load_state_dict(self.state_dicts()[which])
        except (RuntimeError, KeyError) as e:
            raise StoreError(f"run {self.id}: weights do not fit a {self.config.variant} model ({str(e).splitlines()[0]})")
        return model.eval()


class Store:
    def __init__(self, root: str | os.PathLike = "checkpoints"):
        self.root = Path(root)

    # ---- reading -------------------------------------------------------------------------
    def _folders(self):
        for base, ref in ((self.root, False), (self.root / "reference", True)):
            if base.is_dir():
                for p in sorted(base.iterdir()):
                    if (p / "run.json").is_file():
                        yield p, ref

    def runs(self) -> list[Run]:
        """Every readable finished run; unreadable ones are skipped (see problems())."""
        out = []
        for path, ref in self._folders():
            try:
                out.append(_open_run(path, ref))
            except StoreError:
                continue
        return out

    def problems(self) -> list[str]:
        """One line per run folder that cannot be read."""
        out = []
        for path, ref in self._folders():
            try:
                _open_run(path, ref)
            except StoreError as e:
                out.append(str(e))
        return out

    def find(self, config: TrainConfig) -> Run | None:
        """The stored run of exactly this config (local first, then shipped), or None."""
        for base, ref in ((self.root, False), (self.root / "reference", True)):
            path = base / config.run_id
            if (path / "run.json").is_file():
                return _open_run(path, ref)
        return None

    def get(self, run_id: str) -> Run:
        for base, ref in ((self.root, False), (self.root / "reference", True)):
            if (base / run_id / "run.json").is_file():
                return _open_run(base / run_id, ref)
        raise StoreError(f"no run {run_id!r} in {self.root}")

    # ---- writing -------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise StoreError now if runs cannot be written, before any training starts."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as e:
            raise StoreError(f"cannot write to store {self.root}: {e.strerror or e}")

    def save(self, config: TrainConfig, weights: dict[str, dict[str, "torch.Tensor"]] | None, metrics: dict,
             arrays: dict[str, np.ndarray], half: bool = False, made: dict | None = None,
             created: float | None = None, root: Path | None = None) -> Run:
        """Write a finished run atomically; replaces a stored run of the same config.

        weights None: a light run (arrays.npz only). root: another folder of this store (reference/).
        """
        root = self.root if root is None else Path(root)
        self.check_writable()
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{config.run_id}-", dir=root))
        try:
            files = FILES if weights is not None else LIGHT_FILES
            if weights is not None:
                flat = {f"{which}/{k}": v.detach().cpu().numpy().astype(np.float16 if half else np.float32)
                        for which, sd in weights.items() for k, v in sd.items()}
                np.savez_compressed(tmp / "weights.npz", **flat)  # ~9% smaller; loads stay fast
            np.savez_compressed(tmp / "arrays.npz", **{k: v for k, v in arrays.items() if v is not None})
            meta = {"format": FORMAT, "id": config.run_id, "config": config.to_dict(),
                    "metrics": metrics, "made": made or {}, "created": time.time() if created is None else created,
                    "files": {name: _sha256(tmp / name) for name in files}}
            _write_json(tmp / "run.json", meta)
            final = root / config.run_id
            if final.exists():  # --force / retrain: move the old run aside, then swap
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=root))
                os.replace(final, trash / final.name)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _open_run(final, root != self.root)

    def save_light(self, run: Run, root: Path | None = None, made: dict | None = None) -> Run:
        """A light copy of `run` (samples, alpha(t), float16 loss history, metrics) under root."""
        arrays = {"samples": run.samples(), "alpha": run.alpha(), "losses": run.loss_history().astype(np.float16)}
        return self.save(run.config, None, run.metrics, arrays, made=made or run.made, created=run.created, root=root)

    def update_metrics(self, run: Run, metrics: dict) -> Run:
        """Add or replace metrics in a stored run's run.json (atomically; the arrays stay as they are)."""
        meta = _read_json(run.path / "run.json")
        meta["metrics"] = {**meta["metrics"], **metrics}
        _write_json(run.path / "run.json", meta)
        return _open_run(run.path, run.is_reference)

    def write_text(self, relpath: str, text: str) -> Path:
        """Atomically write a text file under the root (tables)."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, text.encode())
        return path

    # ---- runs in progress ----------------------------------------------------------------
    def lock(self, config: TrainConfig) -> "RunLock":
        return RunLock(self, config)

    def active(self) -> list[dict]:
        """Runs being trained now by live processes: run_id, config, pid, started."""
        out = []
        for path in sorted((self.root / "locks").glob("*.json")):
            info = _read_lock(path)
            if info and _alive(info.get("pid")):
                out.append(info)
        return out

    def progress_path(self, run_id: str) -> Path:
        return self.root / "progress" / f"{run_id}.jsonl"

    def start_progress(self, run_id: str) -> None:
        """Begin a new attempt's progress file; its first event stamps when and who."""
        path = self.progress_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"event": "started", "time": time.time(), "pid": os.getpid()}) + "\n")

    def append_progress(self, run_id: str, event: dict) -> None:
        # One short line per O_APPEND write: readers never see half an event from a live writer.
        with open(self.progress_path(run_id), "a") as f:
            f.write(json.dumps(event) + "\n")

    def progress(self, run_id: str) -> list[dict]:
        """The progress events of the latest attempt at this run (a torn last line is dropped)."""
        try:
            lines = self.progress_path(run_id).read_text().splitlines()
        except OSError:
            return []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


class RunLock:
    """An exclusive claim on one config: a lock file created with O_EXCL, holding our pid.

    A lock whose process has died (killed worker) is stale and taken over.
    """

    def __init__(self, store: Store, config: TrainConfig):
        self.path = store.root / "locks" / f"{config.run_id}.json"
        self.info = {"run_id": config.run_id, "config": config.to_dict(), "pid": os.getpid(),
                     "started": time.time()}

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = _read_lock(self.path)
                if held and _alive(held.get("pid")) and held.get("pid") != os.getpid():
                    raise RunInProgress(f"run {self.info['run_id']} is already being trained (pid {held['pid']})")
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.info, f)
            return self
        raise RunInProgress(f"could not claim run {self.info['run_id']}: its lock keeps reappearing")

    def __exit__(self, *exc):
        held = _read_lock(self.path)
        if held and held.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        return False


# ---- helpers -------------------------------------------------------------------------------
def _open_run(path: Path, is_reference: bool) -> Run:
    meta = _read_json(path / "run.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"{path}: not a dualscale run (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    try:
        config = TrainConfig.from_dict(meta["config"])
        metrics = dict(meta["metrics"])
        files = meta["files"]
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"{path}: broken run.json ({e})")
    if config.run_id != path.name or sorted(files) not in (sorted(FILES), sorted(LIGHT_FILES)):
        raise StoreError(f"{path}: folder name and config disagree; the run was moved or edited")
    made = meta.get("made") if isinstance(meta.get("made"), dict) else {}
    return Run(config.run_id, config, metrics, path, is_reference, float(meta.get("created", 0)), made)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: unreadable ({e.__class__.__name__}); delete the folder to retrain")


def _load_npz(path: Path, expected_sha: str) -> dict[str, np.ndarray]:
    try:
        if _sha256(path) != expected_sha:
            raise StoreError(f"{path}: contents do not match run.json (corrupt or truncated); delete the folder to retrain")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        if isinstance(e, StoreError):
            raise
        raise StoreError(f"{path}: unreadable ({e}); delete the folder to retrain")


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """A killed child not yet reaped still answers kill(0); /proc says it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, json.dumps(obj, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
