"""Store.delete (issue 27): a local run goes in one step; shipped, missing, training and ill-named ones are refused."""
import os
import shutil

import numpy as np
import pytest

from dualscale.record import Record
from dualscale import Store, StoreError
from support import small_config


def light_run(store: Store, seed: int = 0, root=None):
    """A stored run in milliseconds (constructed arrays and metrics: nothing here reads them)."""
    arrays = {"samples": np.zeros((10, 2), np.float32), "losses": np.ones(3, np.float32)}
    metrics = {"training_time": 1.0, "inference_time": 0.1, "kl_divergence": 0.1, "eval_loss": 0.8}
    return store.save(small_config("moons", "baseline", seed), Record(metrics, arrays, None, {}), root=root)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


def test_delete_removes_a_local_run_in_one_step(store):
    keep, gone = light_run(store, 0), light_run(store, 1)
    store.delete(gone.id)
    assert not gone.path.exists() and keep.path.is_dir()
    assert [r.id for r in store.runs()] == [keep.id]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".trash-")]  # nothing left aside


@pytest.mark.parametrize("bad", ["../x", "", ".", "..", "moons-baseline-s0-0123456789ab/../..",
                                 "moons-baseline-s0-0123456789ab\n", "/etc", "reference", None])
def test_delete_refuses_a_name_that_is_not_a_run_id(store, bad):
    run = light_run(store)
    with pytest.raises(StoreError, match="is not a run id") as e:
        store.delete(bad)
    assert "\n" not in str(e.value) and run.path.is_dir() and len(store.runs()) == 1


def test_delete_refuses_a_missing_run(store):
    run = light_run(store)
    store.delete(run.id)
    with pytest.raises(StoreError, match=f"no local run {run.id} in "):
        store.delete(run.id)


def test_delete_refuses_a_shipped_run_and_a_local_copy_leaves_it(store):
    shipped = light_run(store, 0, root=store.root / "reference")
    with pytest.raises(StoreError, match="is shipped with the project: it cannot be deleted"):
        store.delete(shipped.id)
    assert shipped.path.is_dir()
    local = light_run(store, 0)  # a local run of the same id hides the shipped one ...
    assert [r.shipped for r in store.runs()] == [False]
    store.delete(local.id)  # ... and deleting it shows the shipped one again
    assert not local.path.exists() and [r.shipped for r in store.runs()] == [True]


def test_delete_refuses_a_run_being_trained(store):
    run = light_run(store)
    with store.lock(run.config):
        with pytest.raises(StoreError, match="is being trained now"):
            store.delete(run.id)
        assert run.path.is_dir()
    store.delete(run.id)  # the lock is released: now it goes
    assert not run.path.exists()


def test_a_delete_killed_half_way_leaves_the_run_whole_or_gone(store, monkeypatch):
    """Killed between the rename and the removal: recover() (run by the next writer) puts it back whole."""
    run = light_run(store)
    monkeypatch.setattr(os, "getpid", lambda: 2**22 + 7)  # a pid no process has: the stray's owner is dead

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        store.delete(run.id)
    monkeypatch.undo()
    assert not run.path.exists() and not store.runs()
    (stray,) = [p for p in store.root.iterdir() if p.name.startswith(".trash-")]
    assert store.recover() == [f"recovered {run.id} from {stray.name}", f"removed {stray.name}"]
    assert [r.id for r in store.runs()] == [run.id]
