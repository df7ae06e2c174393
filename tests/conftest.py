"""Fixtures shared by the library tests (tests/lib) and the dashboard tests (tests/app)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, build_store, damaged_store


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    """A read-only store of support.RUNS, trained once per test session (about 15 s on 2 cores)."""
    return build_store(tmp_path_factory.mktemp("small_store"))


@pytest.fixture(scope="session")
def damaged(small_store, tmp_path_factory):
    """(root, {kind: run id}): the small store plus one run of each kind of damage (support.damaged_store)."""
    import os

    root = tmp_path_factory.mktemp("damaged") / "store"
    kinds = damaged_store(small_store, root)
    yield root, kinds
    os.chmod(root / kinds["unreadable"], 0o755)  # so that pytest can clean it up


@pytest.fixture(scope="session")
def cli():
    """Run `python -m dualscale ARGS [--store STORE]` in the project root; returns the CompletedProcess."""
    def run(*args, store=None, timeout=300):
        cmd = [sys.executable, "-m", "dualscale", *map(str, args)] + (["--store", str(store)] if store else [])
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    return run
