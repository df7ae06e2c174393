"""The run store: one folder per run under a root (default checkpoints/), keyed by config hash.

The only module that writes files. A run folder appears under its final name only when every
file in it is written (it is built in a temporary folder, then renamed), so a run killed
half-way never looks finished. Loads read JSON and numpy arrays with allow_pickle=False: no
object is ever unpickled. Shipped runs live in <root>/reference/ and are read like local ones.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import math
import os
import re
import socket
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import events
from .config import TrainConfig

if TYPE_CHECKING:  # annotations only: the store never imports torch itself
    import torch

    from .record import Record

FORMAT = "dualscale-run/1"
CACHE_FORMAT = "dualscale-cache/1"
FILES = ("weights.npz", "arrays.npz")
LIGHT_FILES = ("arrays.npz",)  # a light run: samples, alpha(t), loss history and metrics; no weights, no trajectory


_UMASK = os.umask(0o022)  # read once (os.umask sets it too: put it straight back)
os.umask(_UMASK)
SHIPPED = ("reference", "study", "evidence")  # committed folders of light and full runs, read as shipped runs
PINS = Path(__file__).with_name("shipped.json")  # {folder: SHA-256 of the MANIFEST.json the project ships}
PROJECT_STORE = Path(__file__).resolve().parent.parent / "checkpoints"  # the store the pins are for


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
    shipped: bool  # from a committed folder (reference/, study/, evidence/), not a local run
    created: float
    made: dict = field(default_factory=dict)  # how the run was made (device, threads, torch, half, command)
    files: dict = field(default_factory=dict)  # file name -> SHA-256, as run.json lists them when opened
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def light(self) -> bool:
        """Shipped without weights and trajectory (seeds past 0 of the reference runs)."""
        return "weights.npz" not in self.files

    def _arrays(self, name: str) -> dict:
        if name not in self._cache:  # verified once per Run object, then served from memory
            self._cache[name] = _load_npz(self.path / name, self.files[name])
        return self._cache[name]

    def verify(self) -> "Run":
        """Check every file run.json lists against its hash; a damaged or missing one is a StoreError
        that says how to get the run back."""
        for name, expected in self.files.items():
            try:
                problem = None if _sha256(self.path / name) == expected else \
                    f"{name} is damaged (it does not match run.json)"
            except FileNotFoundError:
                problem = f"{name} is missing"
            except (OSError, StoreError) as e:
                problem = _why(e)
            if problem:
                raise StoreError(f"run {self.id}: {problem}; retrain it with --force")
        return self

    def samples(self) -> np.ndarray:
        return self._arrays("arrays.npz")["samples"].astype(np.float32)

    def alpha(self) -> np.ndarray | None:
        arrays = self._arrays("arrays.npz")
        return arrays["alpha"] if "alpha" in arrays else None

    def loss_history(self) -> np.ndarray:
        """The training loss per step, (steps,). A study's light run keeps means of `loss_block`
        steps; each step then reads its block's mean."""
        arrays = self._arrays("arrays.npz")
        if "loss_block" in arrays:
            return np.repeat(arrays["losses"], int(arrays["loss_block"]))[:self.config.steps]
        return arrays["losses"]

    def eval_loss_by_t(self) -> np.ndarray | None:
        """(T,) the network's MSE at each timestep on the fixed evaluation set; None for runs stored
        before it was recorded (rescore adds it to those with weights)."""
        arrays = self._arrays("arrays.npz")
        return arrays["eval_loss_by_t"].astype(np.float64) if "eval_loss_by_t" in arrays else None

    def trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(frame labels, (T+1, P, 2) points) of the reverse process; None for a light run."""
        arrays = self._arrays("arrays.npz")
        if "trajectory" not in arrays:
            return None
        return arrays["traj_t"], arrays["trajectory"].astype(np.float32)

    def state_dicts(self) -> dict[str, dict[str, "torch.Tensor"]]:
        """{"online": state_dict, "ema": state_dict} as float32 tensors."""
        import torch  # lazy: reading tables and samples (the dashboard) needs no torch

        if "weights.npz" not in self.files:
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
    def _bases(self):
        """Where runs live: the store itself (local runs), then the shipped folders: reference/ (the
        paper's runs), study/ (the noise-schedule study's light runs) and evidence/ (the seeds that
        settle the primary family)."""
        return ((self.root, False), *((self.root / name, True) for name in SHIPPED))  # a tuple: _bases()[1:] are shipped

    def scan(self) -> tuple[list["Run"], dict[str, str]]:
        """Every readable finished run, and {run id: why} for every run folder that cannot be read.

        One id is one run: a local run hides a shipped run of the same id. Any failure to open one
        run (a damaged or edited run.json, a folder the user cannot read, nesting too deep, a FIFO
        in place of a file) makes that run unreadable and leaves the others alone."""
        runs, problems, seen = [], {}, set()
        for base, ref in self._bases():
            for path in _run_folders(base, problems):
                if path.name in seen:
                    continue
                try:
                    run = self._opened(path, ref, base)
                except Exception as e:  # noqa: BLE001 - any failure of one run is that run's, never the store's
                    problems.setdefault(path.name, _why(e))
                    continue
                seen.add(path.name)
                problems.pop(path.name, None)
                runs.append(run)
        return runs, problems

    def _opened(self, path: Path, shipped: bool, base: Path) -> "Run":
        """_open_run, read again only when run.json changed: a page asks for every run several times
        per visit, and parsing and hashing 768 run.json files took 0.1 s each time (measured). Changed:
        another file_version, so an edit in place is always read (and judged) again. A copy each
        time, so no caller shares a Run's arrays."""
        manifest = self._manifest(base) if shipped else None
        key = file_version(path / "run.json")  # None: _open_run says why
        memo = self.__dict__.setdefault("_runs_read", {})
        hit = memo.get(path)
        if key is None or hit is None or hit[0] != key:
            run = _open_run(path, shipped, manifest, shipped_in=base.name)
            if key is not None:
                memo[path] = (key, run)
            return replace(run, _cache={})
        return replace(hit[1], _cache={})

    def runs(self) -> list["Run"]:
        """Every readable finished run (one per id; see scan())."""
        return self.scan()[0]

    def problems(self) -> list[str]:
        """'<run id>: <why>' for each run folder that cannot be read."""
        return [f"{rid}: {why}" for rid, why in self.scan()[1].items()]

    def _manifest(self, base: Path) -> dict | None:
        """A shipped folder's MANIFEST.json, {run id: SHA-256 of its run.json}, written when it shipped;
        None where there is none to check against (a folder of another store that has none). The
        project's own folders (checkpoints/) must have the very manifest whose digest the package
        pins (shipped.json): a missing or edited one is a StoreError for every run in the folder."""
        cache = self.__dict__.setdefault("_manifests", {})
        if base not in cache:
            cache[base] = _verified_manifest(base)
        if isinstance(cache[base], StoreError):
            raise cache[base]
        return cache[base]

    def unverified(self) -> list[str]:
        """One line per shipped folder of the project that does not verify against the package's pins
        (its runs are then all unreadable): what the dashboard and `list` warn about."""
        out = []
        for base, _ in self._bases()[1:]:
            try:
                if base.is_dir():
                    self._manifest(base)
            except StoreError as e:
                out.append(str(e))
            except OSError:
                continue
        return out

    def find(self, config: TrainConfig) -> "Run | None":
        """The stored run of exactly this config (local first, then shipped), or None; an unreadable
        one is a StoreError that says why."""
        return self._open(config.run_id, missing_ok=True)

    def get(self, run_id: str) -> "Run":
        return self._open(run_id, missing_ok=False)

    def _open(self, run_id: str, missing_ok: bool):
        for base, ref in self._bases():
            path = base / run_id
            try:
                present = path.is_dir()
            except OSError as e:
                raise StoreError(f"run {run_id} is unreadable: {_why(e)}")
            if not present:
                continue
            try:
                return _open_run(path, ref, self._manifest(base) if ref else None, shipped_in=base.name)
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"run {run_id} is unreadable: {_why(e)}")
        if missing_ok:
            return None
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
        self.recover()

    def recover(self) -> list[str]:
        """Finish or clear what a writer killed mid-save left in this store's folders: a complete
        new run stranded in .tmp-<id>-... takes its place when no run of that id is there; an
        incomplete one, and an old run moved aside (.trash-...) once its replacement is in place,
        are removed. Folders of a run whose lock is held (a live writer) are left alone. Returns
        one line per action."""
        done = []
        for base in (self.root, *(self.root / n for n in SHIPPED)):
            try:
                strays = [p for p in base.iterdir() if p.name.startswith((".tmp-", ".trash-")) and p.is_dir()]
            except OSError:
                continue
            for stray in strays:
                done += self._recover_one(base, stray)
        return done

    def _recover_one(self, base: Path, stray: Path) -> list[str]:
        owner = STRAY_OWNER.search(stray.name)
        if owner and _alive(int(owner.group(1))):
            return []  # a live writer (an export, a sweep's save) is still filling it
        inside = [stray] if stray.name.startswith(".tmp-") else [p for p in stray.iterdir() if p.is_dir()]
        rid = (STRAY_OWNER.sub("", stray.name[5:]).rsplit("-", 1)[0] if stray.name.startswith(".tmp-")
               else (inside[0].name if inside else ""))
        if rid and lock_held(self.root / "locks" / f"{rid}.json"):
            return []  # a live writer
        final, out = base / rid, []
        for run_dir in inside:
            try:
                complete = not final.exists() and _open_run(run_dir, base != self.root, name=rid).verify() is not None
            except Exception:  # noqa: BLE001 - incomplete or damaged: nothing to keep
                complete = False
            if complete:
                os.replace(run_dir, final)
                out.append(f"recovered {rid} from {stray.name}")
        shutil.rmtree(stray, ignore_errors=True)
        return out + [f"removed {stray.name}"]

    def save(self, config: TrainConfig, rec: "Record", half: bool = False, created: float | None = None,
             root: Path | None = None) -> Run:
        """Write a finished run, its record.Record whole, atomically; replaces a stored run of the same config.

        rec.weights None: a light run (arrays.npz only). root: another folder of this store (reference/).
        """
        weights, metrics, arrays, made = rec.weights, rec.metrics, rec.arrays, rec.made
        root = self.root if root is None else Path(root)
        self.check_writable()
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{config.run_id}-p{os.getpid()}-", dir=root))  # its owner's pid
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it 0700; a run folder reads like any other
        try:
            files = FILES if weights is not None else LIGHT_FILES
            if weights is not None:
                flat = {f"{which}/{k}": np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)
                        .astype(np.float16 if half else np.float32)
                        for which, sd in weights.items() for k, v in sd.items()}
                np.savez_compressed(tmp / "weights.npz", **flat)  # ~9% smaller; loads stay fast
            np.savez_compressed(tmp / "arrays.npz", **{k: v for k, v in arrays.items() if v is not None})
            meta = {"format": FORMAT, "id": config.run_id, "config": config.to_dict(),
                    "metrics": metrics, "made": made or {}, "created": time.time() if created is None else created,
                    "files": {name: _sha256(tmp / name) for name in files}}
            _write_json(tmp / "run.json", {**meta, "digest": _digest(meta)})
            final = root / config.run_id
            if not final.exists():
                os.replace(tmp, final)
            elif _exchange(tmp, final):  # --force / retrain: swap the two folders in one step
                shutil.rmtree(tmp, ignore_errors=True)  # it now holds the old run
            else:  # no atomic swap here: move the old aside, the new in (recover() finishes a kill between)
                trash = Path(tempfile.mkdtemp(prefix=f".trash-p{os.getpid()}-", dir=root))
                os.replace(final, trash / final.name)
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _open_run(final, root != self.root)

    def delete(self, run_id: str) -> None:
        """Delete a local run: its folder is renamed aside into a .trash-p<pid>-... folder in one
        step, then removed; a kill between the two leaves a stray that recover() puts back whole, a
        kill during the removal one that it clears (a run is there or gone, never half). Refused
        with a one-line StoreError: a name that is not a run id, a run being trained now (its lock
        is held), a shipped run, a missing one. A local run of a shipped id leaves the shipped one."""
        if not isinstance(run_id, str) or not RUN_NAME.fullmatch(run_id):  # no path can be injected
            raise StoreError(f"{run_id!r} is not a run id")
        if lock_held(self.root / "locks" / f"{run_id}.json"):
            raise StoreError(f"run {run_id} is being trained now: cancel it first")
        trash = None
        try:
            if not (self.root / run_id).is_dir():
                if any((self.root / name / run_id).is_dir() for name in SHIPPED):
                    raise StoreError(f"run {run_id} is shipped with the project: it cannot be deleted")
                raise StoreError(f"no local run {run_id} in {self.root}")
            trash = Path(tempfile.mkdtemp(prefix=f".trash-p{os.getpid()}-", dir=self.root))
            os.replace(self.root / run_id, trash / run_id)
        except OSError as e:
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
            raise StoreError(f"cannot delete run {run_id}: {e.strerror or e}")
        shutil.rmtree(trash, ignore_errors=True)

    def save_light(self, run: Run, root: Path | None = None, made: dict | None = None) -> Run:
        """A light copy of `run` (record.lighten: its arrays without the trajectory, the loss history
        as block means; the samples as stored, which its metrics were computed from) under root."""
        from .record import Record, lighten

        rec = Record(run.metrics, lighten(run._arrays("arrays.npz")), None, {**(made or run.made), "light": True})
        return self.save(run.config, rec, created=run.created, root=root)

    def update_metrics(self, run: Run, metrics: dict, made: dict | None = None) -> Run:
        """Add or replace metrics (and the record of how it was made) in a stored run's run.json
        (atomically; the arrays stay as they are)."""
        meta = _read_json(run.path / "run.json")
        meta.pop("digest", None)
        meta["metrics"] = {**meta["metrics"], **metrics}
        if made is not None:
            meta["made"] = made
        _write_json(run.path / "run.json", {**meta, "digest": _digest(meta)})
        return _open_run(run.path, run.shipped)

    def update_arrays(self, run: "Run", arrays: dict[str, np.ndarray]) -> "Run":
        """Add arrays to a stored run's arrays.npz (a new file written beside, then renamed over;
        run.json's hash and digest follow)."""
        merged = {**run._arrays("arrays.npz"), **arrays}
        fd, tmp = tempfile.mkstemp(prefix=".arrays.", suffix=".npz", dir=run.path)
        os.close(fd)
        try:
            np.savez_compressed(tmp, **merged)
            os.chmod(tmp, 0o666 & ~_UMASK)
            meta = _read_json(run.path / "run.json")
            meta.pop("digest", None)
            meta["files"]["arrays.npz"] = _sha256(Path(tmp))
            os.replace(tmp, run.path / "arrays.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _write_json(run.path / "run.json", {**meta, "digest": _digest(meta)})
        return _open_run(run.path, run.shipped)

    def cached(self, name: str, key: str, compute, check=None):
        """compute()'s JSON value, kept in <store>/cache/<name>-<key>.json (a shipped one may sit in
        reference/cache/); `key` must be a fingerprint of exactly the inputs the value is computed
        from. A kept file is served only if it names that key and its value still has the digest
        it was written with and passes check(value) (raises ValueError on a wrong shape);
        anything else (edited, truncated, foreign) is recomputed. A read-only store still answers."""
        file = f"{name}-{key}.json"
        for base in (self.root / "cache", self.root / "reference" / "cache"):
            try:
                kept = json.loads(_read_regular(base / file))  # a FIFO in its place is refused, never waited on
                if kept["format"] != CACHE_FORMAT or kept["key"] != key or kept["digest"] != _digest(kept["value"]):
                    continue
                if check is not None:
                    check(kept["value"])
                return kept["value"]
            except (OSError, ValueError, KeyError, TypeError, RecursionError, StoreError):
                continue
        value = compute()
        try:
            (self.root / "cache").mkdir(parents=True, exist_ok=True)
            _write_json(self.root / "cache" / file, {"format": CACHE_FORMAT, "key": key, "digest": _digest(value),
                                                     "value": value})
        except OSError:
            pass
        return value

    # ---- your own data --------------------------------------------------------------------
    def save_data(self, points: np.ndarray, label: str) -> str:
        """Keep a user's points under their content hash (<root>/data/<hash>.npy and .json, written
        atomically, once); return the dataset's name, `<label>-<hash>` (userdata.py)."""
        from . import userdata

        points = userdata.check(np.asarray(points, dtype=np.float64))
        name = userdata.name_of(points, label)
        digest = name.rsplit("-", 1)[1]
        folder = self.root / "data"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / f"{digest}.npy").is_file():
            import io

            buf = io.BytesIO()
            np.save(buf, points, allow_pickle=False)
            _atomic_write(folder / f"{digest}.npy", buf.getvalue())
        _write_json(folder / f"{name}.json", {"name": name, "points": len(points)})
        userdata.register(name, points)
        return name

    def datasets(self) -> list[str]:
        """The user datasets this store holds (data/<name>.json beside data/<hash>.npy)."""
        from . import userdata

        folder = self.root / "data"
        names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        return [n for n in names if userdata.is_user_dataset(n) and (folder / f"{n.rsplit('-', 1)[1]}.npy").is_file()]

    def data_folder(self) -> Path:
        return self.root / "data"

    def write_manifest(self, folder: str) -> Path:
        """<root>/<folder>/MANIFEST.json: the SHA-256 of every run.json there (every shipped run is
        checked against it on every read); for the project's own store also the manifest's digest
        in the package's pins (dualscale/shipped.json), so that editing a shipped run means editing
        the package too."""
        base = self.root / folder
        runs = {p.name: hashlib.sha256(_read_regular(p / "run.json")).hexdigest()
                for p in sorted(base.iterdir()) if RUN_NAME.match(p.name) and (p / "run.json").is_file()}
        _write_json(base / "MANIFEST.json", {"runs": runs})
        if _is_project(base):
            pins = {**_pins(), folder: _sha256(base / "MANIFEST.json")}
            _atomic_write(PINS, (json.dumps(pins, indent=1, sort_keys=True) + "\n").encode())
        self.__dict__.pop("_manifests", None)
        return base / "MANIFEST.json"

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
        """Runs being trained now (their lock is held): run_id, config, pid, started, proc_start, host."""
        out = []
        for path in sorted((self.root / "locks").glob("*.json")):
            if lock_held(path):
                info = _read_lock(path)
                out.append(info if info else {"run_id": path.stem, "config": None, "pid": None, "started": None})
        return out

    def progress_path(self, run_id: str) -> Path:
        return self.root / "progress" / f"{run_id}.jsonl"

    def start_progress(self, run_id: str) -> None:
        """Begin a new attempt's progress file; its first event stamps when and who."""
        path = self.progress_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        first = {"event": "started", "time": time.time(), "pid": os.getpid()}
        _write_no_follow(path, json.dumps(first) + "\n", os.O_TRUNC)

    def append_progress(self, run_id: str, event: dict) -> None:
        # One short line per O_APPEND write: readers never see half an event from a live writer.
        _write_no_follow(self.progress_path(run_id), json.dumps(event) + "\n", os.O_APPEND)

    def progress(self, run_id: str) -> list[dict]:
        """The progress events of the latest attempt at this run (a torn or malformed line is dropped)."""
        return self.progress_report(run_id)[0]

    def progress_report(self, run_id: str) -> tuple[list[dict], int]:
        """(events, malformed lines): lines that are not UTF-8, not JSON, or not a well-formed event
        (events.well_formed) are skipped and counted, never passed on."""
        try:
            raw = _read_regular(self.progress_path(run_id))
        except (OSError, StoreError):
            return [], 0
        out, bad = [], 0
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                event = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                event = None
            if events.well_formed(event):
                out.append(event)
            elif i < len(lines) - 1:  # the last line may be one a live writer is still writing
                bad += 1
        return out, bad


class RunLock:
    """An exclusive claim on one config: an flock(2) on <root>/locks/<run id>.json, held while the
    run trains, the file naming who holds it (pid, process start time, host, config).

    The kernel drops the flock when its process dies, however it dies, so a lock is held exactly
    while its process lives: no PID is trusted (a reused PID after a reboot holds nothing), and two
    processes can never both hold one lock (the file is claimed by the flock, not by its contents).
    """

    TRIES, WAIT = 20, 0.05  # a reader's probe holds a shared flock for microseconds: retry past it

    def __init__(self, store: Store, config: TrainConfig):
        self.path = store.root / "locks" / f"{config.run_id}.json"
        self.info = {"run_id": config.run_id, "config": config.to_dict(), "pid": os.getpid(),
                     "started": time.time(), "proc_start": process_start(os.getpid()), "host": socket.gethostname()}
        self.fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(self.TRIES):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise StoreError(f"{self.path} is not a regular file (a lock must be one); remove it and start again")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                time.sleep(self.WAIT)
                continue
            if _same_file(fd, self.path):  # not a file a finishing holder unlinked meanwhile
                self.fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(self.info).encode())
                os.fsync(fd)
                return self
            os.close(fd)
        held = _read_lock(self.path) or {}
        raise RunInProgress(f"run {self.info['run_id']} is already being trained (pid {held.get('pid', '?')})")

    def __exit__(self, *exc):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # still holding the flock: nobody claims a dying file
            os.close(self.fd)
            self.fd = None
        return False


STRAY_OWNER = re.compile(r"-p([0-9]+)(?=-[^-]*$)")  # .tmp-<id>-p<pid>-<random>, .trash-p<pid>-<random>


def _alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (a stray's writer may still be writing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def lock_held(path: Path) -> bool:
    """Whether a live process holds the flock on this lock file (a shared, non-blocking probe)."""
    try:  # non-blocking: a FIFO in a lock's place is no lock, and never hangs the reader
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_our_worker(info: dict) -> bool:
    """Whether the process a held lock names is really the one that took it (same pid, same start
    time, this host): the only process the dashboard may signal."""
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0 or info.get("host") != socket.gethostname():
        return False
    start = process_start(pid)
    return start is not None and start == info.get("proc_start")


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
    except OSError:
        return False


# ---- helpers -------------------------------------------------------------------------------
RUN_NAME = re.compile(r"^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*-(baseline|fixed|adaptive)-s[0-9]+-[0-9a-f]{12}$")


def file_version(path: Path) -> tuple | None:
    """What changes with every write to a file, even in place: its inode, size, mtime and ctime (ctime
    cannot be set back by hand). None if it cannot be stat'ed."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _run_folders(base: Path, problems: dict):
    """The run folders directly under base: those holding a run.json, or named like a run (an
    unreadable one is still a run, and is reported)."""
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return
    except OSError as e:
        problems[base.name] = f"the folder {base} cannot be listed: {_why(e)}"
        return
    for p in entries:
        if p.name.startswith("."):
            continue
        try:
            if (p / "run.json").exists() or (RUN_NAME.match(p.name) and p.is_dir()):
                yield p
        except OSError as e:
            if RUN_NAME.match(p.name):
                problems[p.name] = _why(e)


def _why(e: BaseException) -> str:
    """Why a run cannot be read, in one line."""
    if isinstance(e, RecursionError):
        return "run.json is nested too deeply to be a run"
    if isinstance(e, PermissionError):
        return f"not readable by this user ({e.filename or 'permission denied'})"
    if isinstance(e, OSError):
        return f"{e.strerror or e}" + (f" ({Path(e.filename).name})" if e.filename else "")
    text = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    return text


def _pins() -> dict:
    try:
        pins = json.loads(_read_regular(PINS))
        return pins if isinstance(pins, dict) else {}
    except (OSError, ValueError, StoreError):
        return {}


def _is_project(base: Path) -> bool:
    """Whether `base` is one of the project's own shipped folders (checkpoints/reference, ...)."""
    try:
        return base.name in SHIPPED and base.resolve().parent == PROJECT_STORE
    except OSError:
        return False


def _verified_manifest(base: Path):
    """The manifest of a shipped folder as _manifest() serves it (or the StoreError it raises)."""
    pinned = _pins().get(base.name) if _is_project(base) else None
    restore = f"restore it with `git checkout -- checkpoints/{base.name}`"
    try:
        raw = _read_regular(base / "MANIFEST.json")
    except FileNotFoundError:
        if pinned:
            return StoreError(f"shipped {base.name}/ does not verify: its MANIFEST.json is missing; {restore}")
        return None
    except (OSError, StoreError) as e:
        return StoreError(f"shipped {base.name}/ does not verify: its MANIFEST.json is unreadable ({_why(e)}); {restore}")
    if pinned and hashlib.sha256(raw).hexdigest() != pinned:
        return StoreError(f"shipped {base.name}/ does not verify: its MANIFEST.json is not the one this package "
                          f"pins (dualscale/shipped.json); {restore}")
    try:
        runs = json.loads(raw)["runs"]
        if not isinstance(runs, dict):
            raise TypeError("not a table")
        return runs
    except (ValueError, KeyError, TypeError) as e:
        return StoreError(f"shipped {base.name}/ does not verify: its MANIFEST.json is broken ({e}); {restore}")


def _open_run(path: Path, shipped: bool, manifest: dict | None = None, name: str | None = None,
              shipped_in: str = "") -> Run:
    """Open one run folder; a StoreError (or any error: the caller names the run) if it is not a
    valid, unedited run. name: the run id the folder must hold (default: the folder's name).
    manifest: a shipped folder's; the run must be in it, and its run.json must be the one listed."""
    raw = _read_regular(path / "run.json")
    if manifest is not None:
        if path.name not in manifest:
            raise StoreError(f"not in {shipped_in}/MANIFEST.json, so not a shipped run; move the folder to the "
                             "store's root to use it as a local run")
        if hashlib.sha256(raw).hexdigest() != manifest[path.name]:
            raise StoreError("run.json was edited after it shipped (it does not match MANIFEST.json); "
                             "restore it with `git checkout`")
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"run.json is not valid JSON ({e.__class__.__name__}); delete the folder to retrain")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"not a dualscale run (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    # An edit in place is caught by the digest run.json carries (runs written since it exists), or
    # for shipped runs written before by their folder's MANIFEST.json.
    if "digest" in meta and meta["digest"] != _digest({k: v for k, v in meta.items() if k != "digest"}):
        raise StoreError("run.json was edited after it was written (its digest does not match its content); "
                         "retrain it with --force")
    try:
        config = TrainConfig.from_dict(meta["config"])
        metrics = _checked_metrics(meta["metrics"])
        files = meta["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ValueError("its file hashes are not a table of strings")
        created = meta.get("created", 0)
        if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
            raise ValueError(f"its 'created' is {created!r}, not a time")
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"broken run.json ({str(e).splitlines()[0] if str(e) else repr(e)}); "
                         "delete the folder to retrain")
    if config.run_id != (name or path.name) or sorted(files) not in (sorted(FILES), sorted(LIGHT_FILES)):
        raise StoreError("folder name and config disagree; the run was moved or edited")
    made = meta.get("made") if isinstance(meta.get("made"), dict) else {}
    return Run(config.run_id, config, metrics, path, shipped, float(created), made, dict(files))


def _checked_metrics(metrics) -> dict:
    """run.json's metrics: the paper's four present, every registry metric a finite number."""
    import math

    from .metrics import METRICS
    from .paper import PAPER_METRICS

    if not isinstance(metrics, dict):
        raise ValueError("its metrics are not a table")
    for name in PAPER_METRICS:
        if name not in metrics:
            raise ValueError(f"metric {name!r} is missing")
    for name, value in metrics.items():
        if name in METRICS and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                or not math.isfinite(value)):
            raise ValueError(f"metric {name!r} is {value!r}, not a finite number")
    return dict(metrics)


def _read_json(path: Path):
    try:
        return json.loads(_read_regular(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StoreError(f"{path}: unreadable ({e.__class__.__name__}); delete the folder to retrain")


def _open_regular(path: Path):
    """A binary file object of `path` if it is a regular file; a FIFO, device or folder in its place
    is a StoreError at once (opened non-blocking: a FIFO never hangs the reader)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path.name} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_regular(path: Path) -> bytes:
    with _open_regular(path) as f:
        return f.read()


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


def _write_no_follow(path: Path, text: str, mode: int) -> None:
    """Write to a file under the store, never through a symlink planted there (O_NOFOLLOW)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | mode, 0o644)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e} (a symlink there is refused)")
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_lock(path: Path) -> dict | None:
    try:
        info = json.loads(_read_regular(path))
    except (OSError, ValueError, StoreError, RecursionError):
        return None
    return info if isinstance(info, dict) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with _open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _digest(value) -> str:
    """SHA-256 of a JSON value's canonical text."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, json.dumps(obj, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it 0600; the file reads like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
