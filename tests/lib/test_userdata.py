"""Your own data (issue 21): a CSV trained end to end, bad files refused in one line, the content
hash in the run id, the scaling and jitter."""
import numpy as np
import pytest

from dualscale import Store, TrainConfig, make_dataset
from dualscale import userdata

SMALL = ["--steps", "300", "--n-points", "2000", "--n-samples", "500"]


def lissajous(n=60, shift=0.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[np.cos(t) * 40 + 50 + shift, np.sin(2 * t) * 20 + 30]


def write(path, points, header=True):
    path.write_text(("x,y\n" if header else "") + "\n".join(f"{x:.4f},{y:.4f}" for x, y in points) + "\n")
    return path


def test_a_csv_trains_end_to_end_and_a_rerun_loads_it_from_the_store(cli, tmp_path):
    csv = write(tmp_path / "My Shape.csv", lissajous())
    first = cli("train", "--data-file", csv, "--variant", "fixed", *SMALL, store=tmp_path / "store")
    assert first.returncode == 0, first.stderr
    store = Store(tmp_path / "store")
    (run,) = store.runs()
    name = run.config.dataset
    assert name == f"my_shape-{userdata.content_hash(userdata.read_csv(csv))}" and store.datasets() == [name]
    assert np.isfinite(run.metrics["kl_divergence"]) and run._arrays("arrays.npz")["eval_loss_by_t"].shape == (100,)
    again = cli("train", "--data-file", csv, "--variant", "fixed", *SMALL, store=tmp_path / "store")
    assert again.returncode == 0 and "loaded, not retrained" in again.stderr
    verdict = cli("verdict", store=tmp_path / "store")  # judged against its own data, in its own family
    assert verdict.returncode == 0


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"  \n\n", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "the file is not text"),
    (b"\xff\xfe\xfa junk", "not UTF-8 text"),
    (b"x\n1\n2\n3\n", "has 1 column; the file needs two"),
    (b"x,y\n1,2\nnan,3\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20)), "NaN or inf"),
    (b"x,y\n1,2\ninf,3\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20)), "NaN or inf"),
    (b"x,y\n" + b"1,2\n" * 30, "every point is the same point"),
    (b"x,y\n" + b"".join(b"%d,%d\n" % (i % 5, i % 5) for i in range(40)), "only 5 distinct points; at least 10"),
    (b"x,y\n1,2\nfoo,bar\n", "row 2 is not two numbers"),
])
def test_every_bad_file_is_one_line_exit_2_and_nothing_is_stored(cli, tmp_path, content, message):
    (tmp_path / "bad.csv").write_bytes(content)
    r = cli("train", "--data-file", tmp_path / "bad.csv", *SMALL, store=tmp_path / "store")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr and r.stderr.startswith("error: bad.csv: ")
    assert not (tmp_path / "store").exists()


def test_too_many_rows_and_too_big_a_file_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at most 1,000,000 points"):
        userdata.parse(b"x,y\n" + b"1,2\n" * 1_000_002)
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:
        f.truncate(userdata.MAX_BYTES + 1)
    with pytest.raises(ValueError, match="at most 50 MB"):
        userdata.read_csv(big)


def test_one_moved_point_changes_the_name_and_so_the_run_id():
    a, b = lissajous(), lissajous()
    b[7, 0] += 1e-3
    assert userdata.name_of(a, "s.csv") != userdata.name_of(b, "s.csv")
    ids = {TrainConfig(dataset=userdata.name_of(p, "s.csv")).run_id for p in (a, b)}
    assert len(ids) == 2


def test_scaling_and_jitter_follow_the_documented_recipe():
    points = lissajous(shift=1000.0)  # far from the origin, 80 x 40 units
    userdata.register(name := userdata.name_of(points, "far.csv"), points)
    scaled = userdata.scaled(points)
    assert np.allclose((scaled.max(0) + scaled.min(0)) / 2, 0) and np.isclose(np.abs(scaled).max(), userdata.SPAN)
    assert np.isclose(np.ptp(scaled[:, 0]) / np.ptp(scaled[:, 1]), np.ptp(points[:, 0]) / np.ptp(points[:, 1]))  # aspect kept
    data = make_dataset(name, 20_000, seed=42)
    assert data.dtype == np.float32 and data.shape == (20_000, 2)
    nearest = np.min(np.linalg.norm(data[:, None, :] - scaled[None, :, :].astype(np.float32), axis=2), axis=1)
    assert 0.015 < np.median(nearest) / np.sqrt(2 * np.log(2)) < 0.025  # a 2-D normal radius has median 1.18 sd
    assert np.array_equal(data, make_dataset(name, 20_000, seed=42))  # seeded


def test_an_unknown_user_dataset_says_how_to_add_it(monkeypatch):
    monkeypatch.setenv("DUALSCALE_DATA", "/nonexistent")
    with pytest.raises(ValueError, match="--data-file"):
        make_dataset("ghost-0123456789ab", 10)
