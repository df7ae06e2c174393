"""Issue 26, trust round three: shipped evidence cannot be edited unseen, no file the program reads
hangs it, a kept verdict is never the only witness, and what a command says matches what it did."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualscale import Store
from dualscale import store as store_mod
from dualscale.runs import check, known_difference
from dualscale.stats import CACHE_NAME, verdict_of
from dualscale.store import _digest
from support import ROOT, copy_store, small_config, write_run_json


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A copy of the project's shipped evidence, read as the project's own store (its manifest is
    checked against the package's pins)."""
    root = tmp_path / "checkpoints"
    root.mkdir()
    shutil.copytree(ROOT / "checkpoints" / "evidence", root / "evidence")
    monkeypatch.setattr(store_mod, "PROJECT_STORE", root.resolve())
    return root


def evidence_run(root: Path, n: int = 0) -> Path:
    return sorted(p for p in (root / "evidence").iterdir() if p.is_dir())[n]


def test_the_shipped_evidence_verifies_against_the_packages_pins(project):
    runs, problems = Store(project).scan()
    assert problems == {} and len(runs) == len(json.loads((project / "evidence" / "MANIFEST.json").read_text())["runs"])
    assert all(r.shipped for r in runs) and Store(project).unverified() == []


def test_an_edited_evidence_run_with_a_recomputed_digest_is_refused(project):
    path = evidence_run(project)
    meta = json.loads((path / "run.json").read_text())
    meta["metrics"]["kl_divergence"] -= 0.15
    write_run_json(path, meta)  # its own digest recomputed: only the manifest can tell
    problems = Store(project).scan()[1]
    assert "edited after it shipped" in problems[path.name]


def test_a_fabricated_run_folder_is_not_counted_as_shipped(project):
    path = evidence_run(project)
    meta = json.loads((path / "run.json").read_text())
    meta["config"]["seed"] = 9999
    from dualscale import TrainConfig

    rid = TrainConfig.from_dict(meta["config"]).run_id
    shutil.copytree(path, project / "evidence" / rid)
    write_run_json(project / "evidence" / rid, {**meta, "id": rid})
    runs, problems = Store(project).scan()
    assert rid not in {r.id for r in runs}
    assert "not in evidence/MANIFEST.json" in problems[rid]


@pytest.mark.parametrize("damage", ["deleted", "edited with the run"])
def test_a_missing_or_edited_manifest_makes_the_whole_folder_unverified(project, damage):
    manifest = project / "evidence" / "MANIFEST.json"
    if damage == "deleted":
        manifest.unlink()
    else:  # edit a run and its manifest entry together: only the package's pin still knows
        import hashlib

        path = evidence_run(project)
        meta = json.loads((path / "run.json").read_text())
        meta["metrics"]["kl_divergence"] -= 0.15
        write_run_json(path, meta)
        entries = json.loads(manifest.read_text())
        entries["runs"][path.name] = hashlib.sha256((path / "run.json").read_bytes()).hexdigest()
        manifest.write_text(json.dumps(entries))
    store = Store(project)
    runs, problems = store.scan()
    assert runs == [] and len(problems) > 100
    (line,) = store.unverified()
    assert line.startswith("shipped evidence/ does not verify") and "git checkout" in line


def test_a_forged_verdict_cache_is_recomputed_not_served(small_store, tmp_path):
    root = copy_store(small_store, tmp_path / "store")
    store = Store(root)
    runs = store.runs()
    true = verdict_of(runs, store)
    (cached,) = (root / "cache").glob(f"{CACHE_NAME}-*.json")
    kept = json.loads(cached.read_text())
    c = kept["value"]["comparisons"][0]
    c["cs_low"], c["cs_high"], c["decision"], c["verdict"] = -1.0, -0.5, "better", "better"  # forged, digest recomputed
    kept["digest"] = _digest(kept["value"])
    cached.write_text(json.dumps(kept))
    again = verdict_of(runs, Store(root))
    assert again.comparisons[0].cs_low == true.comparisons[0].cs_low != -1.0
    assert again.comparisons[0].decision == true.comparisons[0].decision


def _in_time(cmd, timeout=90, **kw):
    """Run a command that must answer: a hang is a failure, not a stuck suite."""
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def test_a_fifo_in_place_of_the_verdict_cache_or_a_lock_never_hangs(small_store, tmp_path):
    root = copy_store(small_store, tmp_path / "store")
    store = Store(root)
    verdict_of(store.runs(), store)
    (cached,) = (root / "cache").glob(f"{CACHE_NAME}-*.json")
    cached.unlink()
    os.mkfifo(cached)
    config = small_config("moons", "baseline", 0)
    (root / "locks").mkdir(exist_ok=True)
    os.mkfifo(root / "locks" / f"{config.run_id}.json")
    os.mkdir(root / f".tmp-{config.run_id}-k1ll3d")  # a stranded folder beside it, as the issue found
    py = [sys.executable, "-m", "dualscale"]
    r = _in_time(py + ["verdict", "--store", str(root)])
    assert r.returncode == 0 and "moons" in r.stdout, r.stderr
    r = _in_time(py + ["list", "--store", str(root)])
    assert r.returncode == 0 and config.run_id in r.stdout, r.stderr
    r = _in_time(py + ["train", "--config", config.to_json(), "--store", str(root), "--device", "cpu"])
    assert r.returncode == 0 and "loaded, not retrained" in r.stderr, r.stderr
    assert store.active() == []  # a FIFO is no lock


def test_export_to_an_unwritable_destination_fails_in_one_line(small_store, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = cli("export", "--to", blocker / "reference", store=small_store)
    assert r.returncode != 0 and "written" not in r.stdout
    assert r.stderr.strip().startswith("error: cannot write to store") and len(r.stderr.strip().splitlines()) == 1


def test_recover_leaves_a_live_writers_folder_alone_and_clears_a_dead_ones(small_store, tmp_path):
    root = copy_store(small_store, tmp_path / "store")
    rid = small_config("moons", "fixed", 0).run_id
    live = root / f".tmp-{rid}-p{os.getpid()}-abc123"
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    dead = root / f".tmp-{rid}-p{dead_pid.pid}-def456"
    live.mkdir()
    dead.mkdir()
    Store(root).recover()
    assert live.is_dir() and not dead.exists()


def test_train_loads_a_stored_config_from_a_store_it_cannot_write(small_store, monkeypatch, capsys):
    """As root no permission bit stops a write; a store that refuses writes stands in for a read-only one."""
    from dualscale.__main__ import main
    from dualscale.store import StoreError

    def refuse(self):
        raise StoreError(f"cannot write to store {self.root}: Read-only file system")

    monkeypatch.setattr(Store, "check_writable", refuse)
    config = small_config("moons", "baseline", 0)
    assert main(["train", "--config", config.to_json(), "--store", str(small_store), "--device", "cpu"]) == 0
    assert "loaded, not retrained" in capsys.readouterr().err
    other = small_config("moons", "baseline", 7)
    assert main(["train", "--config", other.to_json(), "--store", str(small_store), "--device", "cpu"]) == 2


def test_a_cancelled_sweep_says_which_runs_it_kept(tmp_path):
    cmd = [sys.executable, "-m", "dualscale", "reproduce", "--datasets", "line", "--variants", "baseline",
           "--seeds", "0-3", "--steps", "60", "--n-points", "512", "--batch-size", "64", "--n-samples", "100",
           "--jobs", "1", "--device", "cpu", "--store", str(tmp_path)]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(tmp_path.glob("line-baseline-s*"))) < 1:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    stored = len([p for p in tmp_path.glob("line-baseline-s*") if (p / "run.json").is_file()])
    assert p.returncode == 130 and stored >= 1
    assert "nothing was stored" not in err and "finished before it are stored and kept" in err, err


def test_rescore_check_names_the_known_dated_difference_of_old_oracle_starts():
    store = Store(ROOT / "checkpoints")
    run = next(r for r in store.runs() if r.shipped and not r.light and "machine" not in r.made
               and r.config.dataset == "line" and r.config.variant == "baseline")
    (_, diffs), = list(check(store, [run]))
    assert set(diffs) == {"kl_oracle_start"}  # every other metric recomputes exactly
    assert known_difference(run, "kl_oracle_start").startswith("known since 2026-11-28")
    assert known_difference(run, "kl_divergence") is None


def test_a_sweep_stopped_by_a_full_disk_is_one_line_without_joblibs_warning(tmp_path, monkeypatch):
    """Issue 26: a disk that fills mid-sweep leaked joblib's two-line "tasks ... cancelled" warning
    beside our one line (reproduced on a 600 KB tmpfs; here the store's write fails the same way)."""
    import errno
    import warnings

    from dualscale.sweeps import sweep

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Store, "save", full)
    configs = [small_config("line", "baseline", s, steps=40, n_points=512, batch_size=64, n_samples=100)
               for s in range(4)]
    with warnings.catch_warnings(record=True) as caught, pytest.raises(OSError, match="No space left"):
        warnings.simplefilter("always")
        list(sweep(configs, Store(tmp_path), "cpu", jobs=2))
    assert not [w for w in caught if "tasks which were still being processed" in str(w.message)]
