"""Trust, round three (issues 26 and 27) on the dashboard, through streamlit's AppTest.

- Your data: a stranger's text (a CSV's lines, its file name) is shown as it is, never as markdown;
  the error names the line and quotes the offending field as it is in the file; a file that will be
  refused is never stored or listed; a store that cannot keep the points is one line, not a crash.
- Inside: a run whose weights.npz is truncated, missing, a FIFO, or rewritten with run.json to
  match, local or shipped, is named in one literal line and the rest of the page is drawn; a FIFO
  never hangs the page (AppTest's timeout would fail the test).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from support import ROOT, SMALL, copy_store, small_config, write_run_json
from dualscale import Store
from dualscale.store import _sha256

TIMEOUT = 60  # seconds an AppTest run may take: a hang on a FIFO fails the test instead of blocking it


def start(root, monkeypatch) -> AppTest:
    monkeypatch.setenv("DUALSCALE_STORE", str(root))
    return ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run())


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(body: str) -> str:
    """What a markdown body shows when it is one code span (CommonMark: its content as it is, with no
    link, image, emphasis or autolink); an AssertionError when it is anything else."""
    m = re.fullmatch(r"(`+) (.*) \1", body, flags=re.S)
    assert m and not re.search(rf"(?<!`){m[1]}(?!`)", m[2]) and "\n" not in m[2], f"not one literal line: {body!r}"
    return m[2]


def errors(at: AppTest) -> list[str]:
    """The page's error boxes (the sidebar's left out), as the user reads them."""
    return [shown(e.value) for e in at.main.error]


# ------------------------------------------------------------------------------- Your data

@pytest.fixture
def data_page(tmp_path, monkeypatch):
    return ok(start(tmp_path / "store", monkeypatch).switch_page("views/data.py").run())


def upload(at: AppTest, name: str, content: bytes) -> AppTest:
    at.file_uploader(key="data_file").set_value((name, content, "text/csv"))
    return ok(at.run())


HEAD = b"x,y\n" + b"".join(b"%d,%d\n" % (i, (i * 7) % 12) for i in range(12))  # lines 1-13, twelve good points


def test_a_rows_markdown_is_shown_as_it_is_with_its_line(data_page, tmp_path):
    at = upload(data_page, "evil.csv", HEAD + b"![x](https://evil.example/p.png),2\n")
    assert errors(at) == ["evil.csv: line 14: '![x](https://evil.example/p.png)' is not a number "
                          "(x and y must be numbers)"]
    at = upload(at, "link.csv", HEAD + b"[x](https://e.example) 1,2\n")  # the line quoted, as it is in the file
    assert errors(at) == ["link.csv: expected two columns x, y; line 14 has 3: '[x](https://e.example) 1,2'"]
    at = upload(at, "ticks.csv", HEAD + b"``a`` `b`,2\n")  # backticks cannot close the literal early
    assert errors(at) == ["ticks.csv: expected two columns x, y; line 14 has 3: '``a`` `b`,2'"]
    assert not (tmp_path / "store" / "data").exists() and not at.get("plotly_chart")  # no preview


def test_a_file_names_markdown_is_shown_as_it_is(data_page):
    name = "![x](https://evil.example/p.png) [y](https://e.example) **z**.csv"
    at = upload(data_page, name, b"x\n1\n2\n")
    assert errors(at) == [f"{name}: expected two columns x, y; line 2 has 1: '1'"]


@pytest.mark.parametrize("content, message", [
    (b"x,y\n" + b"".join(b"%.17g,%.17g\n" % (i * 1e-311, (i * 7 % 12) * 1e-311) for i in range(12)),
     "the points span only 1.1e-310, too little to scale"),  # trained to 'loss became nan' once stored
    (HEAD + b"1e308,1e308\n-1e308,-1e308\n", "remove the outliers"),  # trained on (0, 0) everywhere
], ids=["denormal", "outliers"])
def test_a_file_that_cannot_train_is_refused_and_never_stored(data_page, tmp_path, content, message):
    at = upload(data_page, "bad.csv", content)
    (error,) = errors(at)
    assert error.startswith("bad.csv: ") and message in error, error
    assert not [b for b in at.button if b.key in ("data_train", "data_go")]  # nothing to confirm
    assert not (tmp_path / "store" / "data").exists() and Store(tmp_path / "store").datasets() == []


def test_a_store_that_cannot_keep_the_points_is_one_line_and_nothing_is_queued(data_page, tmp_path):
    (tmp_path / "store").mkdir(exist_ok=True)
    (tmp_path / "store" / "data").write_text("a file where the data folder goes")
    at = upload(data_page, "ring.csv", HEAD)
    assert not errors(at)
    at.button(key="data_train").click()
    at = ok(at.run())
    at.button(key="data_go").click()
    at = ok(at.run())
    (error,) = errors(at)
    assert error == f"Not queued: the store cannot keep the points (File exists: {tmp_path / 'store' / 'data'})"
    assert "data_queued" not in at.session_state and (tmp_path / "store" / "data").is_file()
    assert Store(tmp_path / "store").runs() == []


# ------------------------------------------------------------------------------- Inside

def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def fifo(path):
    path.unlink()
    os.mkfifo(path)


def rewritten(path):
    """Truncated, and run.json rewritten to match (as a faulty writer would): caught by numpy, not the hash."""
    truncate(path)
    meta = json.loads((path.parent / "run.json").read_text())
    meta["files"]["weights.npz"] = _sha256(path)
    write_run_json(path.parent, meta)


DAMAGE = {  # (dataset, variant, seed) -> how its weights.npz is damaged; shipped: moved into reference/
    ("moons", "adaptive", 0): ("truncated", truncate, False),
    ("moons", "adaptive", 1): ("deleted", lambda p: p.unlink(), False),
    ("moons", "fixed", 0): ("a FIFO", fifo, False),
    ("moons", "baseline", 1): ("truncated, shipped", truncate, True),
    ("circle", "adaptive", 0): ("rewritten", rewritten, False),
}


@pytest.fixture(scope="module")
def damaged_weights(small_store, tmp_path_factory):
    """A copy of the small store in which every run of DAMAGE has damaged weights; moons/baseline/s0
    is left whole."""
    root = copy_store(small_store, tmp_path_factory.mktemp("damaged_weights") / "store")
    store = Store(root)
    for (dataset, variant, seed), (_, damage, shipped) in DAMAGE.items():
        run = store.find(small_config(dataset, variant, seed))
        path = run.path
        if shipped:
            (root / "reference").mkdir(exist_ok=True)
            path = shutil.move(run.path, root / "reference" / run.id)
        damage(Path(path) / "weights.npz")
    return root


@pytest.mark.parametrize("key", list(DAMAGE), ids=[f"{d}-{v}-{s}-{DAMAGE[d, v, s][0]}" for d, v, s in DAMAGE])
def test_inside_names_the_run_with_damaged_weights_and_draws_the_rest(damaged_weights, monkeypatch, key):
    dataset, variant, seed = key
    at = start(damaged_weights, monkeypatch)
    for name, value in SMALL.items():
        at.number_input(key=f"cfg_{name}").set_value(value)
    at.selectbox(key="cfg_dataset").set_value(dataset)
    at.radio(key="cfg_variant").set_value(variant)
    at.number_input(key="cfg_seed").set_value(seed)
    at = ok(ok(at.run()).switch_page("views/inside.py").run())
    run = next(r for r in Store(damaged_weights).runs() if r.config == small_config(*key))
    assert run.shipped == DAMAGE[key][2]
    (error,) = errors(at)
    origin = "shipped in reference/" if run.shipped else "local"
    assert error.startswith(f"Run {run.id} ({dataset}/{variant}, seed {seed}, {origin}) has damaged weights"), error
    assert str(damaged_weights) not in error  # the run's id names it; no long path
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("-inside_field")]
    assert not [s for s in at.slider if s.key == "inside_t"]
    if dataset == "moons":  # the rest of the page: where in t, from the runs' arrays (undamaged)
        assert [c for c in at.get("plotly_chart") if c.proto.id.endswith("-inside_where")]


def test_inside_still_draws_a_whole_run_beside_damaged_ones(damaged_weights, monkeypatch):
    at = start(damaged_weights, monkeypatch)
    for name, value in SMALL.items():
        at.number_input(key=f"cfg_{name}").set_value(value)
    at.selectbox(key="cfg_dataset").set_value("moons")
    at.radio(key="cfg_variant").set_value("baseline")
    at.number_input(key="cfg_seed").set_value(0)
    at = ok(ok(at.run()).switch_page("views/inside.py").run())
    assert not errors(at)
    assert [c for c in at.get("plotly_chart") if c.proto.id.endswith("-inside_field")]


def test_the_damage_is_what_the_tests_say(damaged_weights):
    """The fixture damages what it claims: the whole run loads, each damaged one fails to."""
    runs = {(r.config.dataset, r.config.variant, r.config.seed): r for r in Store(damaged_weights).runs()}
    runs["moons", "baseline", 0].load_model()
    for key in DAMAGE:
        with pytest.raises((ValueError, zipfile.BadZipFile, OSError, EOFError)):
            runs[key].load_model()


def test_every_page_says_when_shipped_data_does_not_verify(small_store, tmp_path, monkeypatch):
    """Issue 26: a shipped folder whose manifest is missing (or not the one the package pins) is said
    on every page, and its runs count nowhere."""
    from dualscale import store as store_mod

    root = copy_store(small_store, tmp_path / "checkpoints")
    shutil.copytree(ROOT / "checkpoints" / "evidence", root / "evidence")
    (root / "evidence" / "MANIFEST.json").unlink()
    monkeypatch.setattr(store_mod, "PROJECT_STORE", root.resolve())
    at = start(root, monkeypatch)
    for name in ("verdict", "results"):
        if name != "verdict":
            at.switch_page(f"views/{name}.py").run()
            ok(at)
        errors = [e.value for e in at.error]
        assert any(e.startswith("shipped evidence/ does not verify: its MANIFEST.json is missing") for e in errors), errors
