"""Issue 20: no damaged file takes the store down. A store with one run of each kind of damage
(support.damaged_store): every command still shows the good runs and names each damaged one."""
import json
import os
import subprocess
import sys

import pytest

from dualscale.record import Record
from dualscale import Store
from dualscale.runner import summarize
from support import ROOT, RUNS, small_config


GOOD = {small_config(*r).run_id for r in RUNS}
REASONS = {"created null": "'created' is None", "created list": "'created' is [1]",
           "created text": "'created' is 'yesterday'", "nested": "nested too deeply",
           "edited": "edited after it was written"}


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "dualscale", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_scan_keeps_every_good_run_once_and_names_each_damaged_one(damaged):
    root, kinds = damaged
    runs, problems = Store(root).scan()
    ids = [r.id for r in runs]
    assert sorted(ids) == sorted(set(ids)) and GOOD <= set(ids)  # one id, one run
    dup = next(r for r in runs if r.id == kinds["duplicate"])
    assert not dup.shipped  # the local run replaces the shipped one
    for kind, reason in REASONS.items():
        assert reason in problems[kinds[kind]], (kind, problems.get(kinds[kind]))
    assert kinds["fifo"] in ids  # its run.json is fine; the FIFO is met when its arrays are read
    with pytest.raises(Exception, match="not a regular file"):
        Store(root).get(kinds["fifo"]).verify()


def test_list_verdict_train_and_export_show_the_good_runs_and_name_the_damaged(damaged, tmp_path):
    root, kinds = damaged
    listed = cli("list", "--store", root)
    assert listed.returncode == 0, listed.stderr
    for rid in GOOD:
        assert listed.stdout.count(rid) == 1
    for kind in REASONS:
        assert f"unreadable: {kinds[kind]}: " in listed.stderr
    assert f"damaged: run {kinds['fifo']}: arrays.npz is not a regular file" in listed.stderr
    assert "Traceback" not in listed.stderr
    verdict = cli("verdict", "--store", root)
    assert verdict.returncode == 0 and "Traceback" not in verdict.stderr and "moons" in verdict.stdout
    train = cli("train", "--config", small_config("moons", "adaptive", 0).to_json(), "--store", root)
    assert train.returncode == 0 and "loaded, not retrained" in train.stderr
    export = cli("export", "--store", root, "--to", tmp_path / "light", timeout=60)  # the FIFO must not hang it
    assert export.returncode == 0, export.stderr
    assert "skipped: " in export.stderr and kinds["fifo"] in export.stderr
    assert GOOD <= {r.id for r in Store(tmp_path / "light").runs()}


def test_a_folder_its_user_cannot_read_is_one_unreadable_run(damaged):
    """Mode 000 binds every user but root's override: `list` runs without the capabilities that let
    root read any folder (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), as any other user would."""
    root, kinds = damaged
    command = [sys.executable, "-m", "dualscale", "list", "--store", str(root)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"unreadable: {kinds['unreadable']}: not readable by this user" in r.stderr
    assert all(rid in r.stdout for rid in GOOD)


def test_a_stranded_complete_run_is_recovered_and_a_force_replace_is_one_swap(damaged, tmp_path):
    root, kinds = damaged
    assert Store(root).find(small_config("moons", "baseline", 107)) is not None  # list (above) recovered it
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())
    # --force: the old run is replaced in one step (renameat2 exchange); never a moment without a run
    store = Store(tmp_path)
    config = small_config("line", "baseline", 0)
    first = store.save(config, Record({"training_time": 1.0, "eval_loss": 0.5, "inference_time": 0.1,
                                         "kl_divergence": 0.2}, {"samples": __import__("numpy").zeros((3, 2))}, None, {}))
    inode = os.stat(first.path).st_ino
    second = store.save(config, Record({**first.metrics, "kl_divergence": 0.3}, {"samples": __import__("numpy").zeros((3, 2))},
                                       None, {}))
    assert second.metrics["kl_divergence"] == 0.3 and os.stat(second.path).st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == [config.run_id]


def test_a_malformed_progress_file_is_read_around_and_counted(damaged):
    root, kinds = damaged
    events, bad = Store(root).progress_report(kinds["created text"])
    assert [e["event"] for e in events] == ["started", "progress"] and bad == 4
    status = summarize(kinds["created text"], events, alive=False, malformed=bad)
    assert status.step == 3 and status.malformed == 4


def test_verdict_names_an_unreadable_partner_instead_of_calling_it_missing(small_store, tmp_path):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(small_store, root)
    partner = Store(root).find(small_config("moons", "baseline", 1))
    (partner.path / "run.json").write_text("{")  # the baseline of seed 1 exists but cannot be read
    r = cli("verdict", "--store", root, "--metrics", "kl_divergence")
    assert r.returncode == 0
    assert f"moons/adaptive seed 1: its baseline run {partner.id} is unreadable: run.json is not valid JSON" in r.stdout


def test_an_edited_or_malformed_verdict_cache_is_recomputed(small_store, tmp_path):
    import shutil

    from dualscale.stats import CACHE_NAME, JUDGED, runs_key, verdict_of

    root = tmp_path / "store"
    shutil.copytree(small_store, root)
    store = Store(root)
    truth = verdict_of(store.runs()).to_json()
    verdict_of(store.runs(), store)  # kept in the cache
    file = root / "cache" / f"{CACHE_NAME}-{runs_key(store.runs(), JUDGED)}.json"
    kept = json.loads(file.read_text())
    kept["value"]["comparisons"][0]["mean_diff"] = -9.0  # an edited number
    file.write_text(json.dumps(kept))
    assert verdict_of(store.runs(), store).to_json() == truth
    for junk in ("{}", "[]", '{"format": "dualscale-cache/1", "key": "x", "digest": "y", "value": {}}'):
        file.write_text(junk)
        assert verdict_of(store.runs(), store).to_json() == truth


def test_one_store_reads_a_run_json_again_once_it_is_edited_in_place(small_store, tmp_path):
    """Store.scan keeps what it read of an unchanged run.json; an edit in place, even one that keeps
    the file's size and its mtime, is read again and judged."""
    import shutil

    root = tmp_path / "store"
    shutil.copytree(small_store, root)
    store = Store(root)
    before = {r.id: r for r in store.runs()}
    rid = sorted(before)[0]
    path = root / rid / "run.json"
    text, stat = path.read_text(), path.stat()
    i = text.index('"created"')
    digit = next(j for j in range(i, len(text)) if text[j].isdigit() and text[j] != "9")
    edited = text[:digit] + str(int(text[digit]) + 1) + text[digit + 1:]  # same size, another value
    with open(path, "r+") as f:  # in place: the same inode
        f.write(edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old mtime, set back by hand
    runs, problems = store.scan()
    assert rid not in {r.id for r in runs}
    assert "edited after it was written" in problems[rid]
    assert {r.id for r in runs} == set(before) - {rid}
    assert all(r is not before[r.id] for r in runs)  # fresh objects: no caller shares another's arrays
