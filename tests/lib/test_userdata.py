"""Your own data (issue 21): a CSV trained end to end, bad files refused in one line, the content
hash in the run id, the scaling and jitter. Issue 26: no CSV trains on the wrong data silently
(decimal commas, extra columns, values near the float64 limit, denormal values)."""
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
    (b"x\n1\n2\n3\n", "expected two columns x, y; line 2 has 1"),
    (b"x,y\n1,2\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20)) + b"3,4,5\n",
     "expected two columns x, y; line 23 has 3"),
    (b"x,y\n1,2\nnan,3\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20)), "NaN or inf"),
    (b"x,y\n1,2\ninf,3\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20)), "NaN or inf"),
    (b"x,y\n" + b"1,2\n" * 30, "every point is the same point"),
    (b"x,y\n" + b"".join(b"%d,%d\n" % (i % 5, i % 5) for i in range(40)), "only 5 distinct points; at least 10"),
    (b"x,y\n1,2\nfoo,bar\n", "line 3: 'foo' is not a number"),
    (b"x,y\n" + b"".join(b"%.17g,%.17g\n" % (x * 1e-312, y * 1e-312) for x, y in lissajous()), "too little to scale"),
    (b"x,y\n1e308,1e308\n-1e308,-1e308\n" + b"".join(b"%d,%d\n" % (i, i % 7) for i in range(40)),
     "remove the outliers"),
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


# ---- issue 26: no CSV trains on the wrong data silently ---------------------------------------
def refused(raw: bytes, match: str) -> str:
    """parse(raw)'s error: one line, containing `match`."""
    with pytest.raises(ValueError) as e:
        userdata.parse(raw)
    assert match in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)
    return str(e.value)


def test_semicolons_make_the_comma_the_decimal_mark(tmp_path):
    rows = b"".join(b"%d,5;-%d,25\n" % (i, i) for i in range(1, 12))
    (tmp_path / "eu.csv").write_bytes(b"x;y\n0,126;-0,132\n" + rows)
    points = userdata.read_csv(tmp_path / "eu.csv")
    assert points.shape == (12, 2)
    np.testing.assert_array_equal(points[0], [0.126, -0.132])
    np.testing.assert_array_equal(points[1:], [[i + 0.5, -i - 0.25] for i in range(1, 12)])
    # with spaces or tabs beside the semicolons, and no header
    np.testing.assert_array_equal(userdata.parse(b"".join(b"%d,5 ;\t%d\n" % (i, 2 * i) for i in range(12))),
                                  [[i + 0.5, 2 * i] for i in range(12)])
    # a comma as a thousands mark (or one comma too many) is a non-number, not a silent misreading
    refused(b"x;y\n" + b"".join(b"%d;%d\n" % (i, i) for i in range(12)) + b"1,234,5;2\n",
            "line 14: '1,234,5' is not a number")


def test_a_decimal_comma_without_semicolons_is_refused_not_misread():
    """`0,126 -0,132` (spaces between, commas inside) were read as the points (0, 126): now four columns."""
    refused(b"".join(b"0,%d -0,%d\n" % (100 + i, 200 + i) for i in range(12)),
            "expected two columns x, y; line 1 has 4")


def test_extra_columns_are_refused_naming_the_line():
    good = b"x,y\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(12))
    assert userdata.parse(good).shape == (12, 2)
    message = refused(good + b"\n12,144,7\n", "expected two columns x, y; line 15 has 3")  # blank line 14 counted
    assert message.endswith("'12,144,7'")  # the line as it is in the file
    refused(b"x,y,z\n" + b"".join(b"%d,%d,%d\n" % (i, i, i) for i in range(12)), "line 2 has 3")
    refused(good.replace(b"5,25", b"5,25,label"), "line 7 has 3: '5,25,label'")  # a text column too


def test_the_error_quotes_the_offending_field_as_it_is_in_the_file():
    """Issue 27: the quote was the first two cells re-joined with ', ' and the row counted without the header."""
    head = b"x,y\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(12))
    assert refused(head + b"![x](https://evil.example/p.png),2\n", "line 14:") == \
        "line 14: '![x](https://evil.example/p.png)' is not a number (x and y must be numbers)"
    assert refused(head + b"3,four\n", "line 14:").startswith("line 14: 'four' is not a number")
    long = b"a" * 100
    assert refused(head + long + b",2\n", "line 14:").startswith("line 14: '" + "a" * 40 + "'… is not a number")


def cloud(n=60) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[np.cos(t), np.sin(2 * t)]


def csv_of(points) -> bytes:
    return b"x,y\n" + b"".join(b"%r,%r\n" % (float(x), float(y)) for x, y in points)


def test_far_outliers_are_refused_not_scaled_into_zeros():
    """Before: 1e308 and -1e308 made the range inf, the scale 0, and every point (0, 0), silently."""
    far = np.r_[lissajous(), [[1e308, 1e308], [-1e308, -1e308]]]
    message = refused(csv_of(far), "remove the outliers")
    assert "only 3 of the 62 distinct points stay apart" in message and "1e+308" in message
    refused(csv_of(np.r_[lissajous(), [[1e308, 0.0]]]), "only 2 of the 61 distinct points stay apart")
    with pytest.raises(ValueError, match="remove the outliers"):
        userdata.check(far)  # what the drawing pad and Store.save_data check too


def test_values_near_the_float64_limit_scale_like_any_others(tmp_path):
    """A cloud that spans the float64 range is scaled without overflow, to the same shape as at unit size."""
    (tmp_path / "vast.csv").write_bytes(csv_of(cloud() * 1.5e308))
    points = userdata.read_csv(tmp_path / "vast.csv")
    scaled = userdata.scaled(points)
    assert np.all(np.isfinite(scaled)) and np.isclose(np.abs(scaled).max(), userdata.SPAN)
    np.testing.assert_allclose(scaled, userdata.scaled(cloud()), atol=1e-12)
    userdata.register(name := userdata.name_of(points, "vast"), points)
    data = make_dataset(name, 1000, seed=1)
    assert np.all(np.isfinite(data)) and np.abs(data).max() < userdata.SPAN + 0.2


def test_denormal_data_is_refused_when_read_never_stored(tmp_path):
    """Before: accepted, stored and listed, then training failed with 'loss became nan'."""
    tiny = cloud() * 1e-310
    (tmp_path / "tiny.csv").write_bytes(csv_of(tiny))
    with pytest.raises(ValueError, match=r"^tiny\.csv: the points span only 2e-310, too little to scale") as e:
        userdata.read_csv(tmp_path / "tiny.csv")
    assert len(str(e.value).splitlines()) == 1 and "multiply every value by a power of ten" in str(e.value)
    store = Store(tmp_path / "store")
    with pytest.raises(ValueError, match="too little to scale"):
        store.save_data(tiny, "tiny")
    assert store.datasets() == [] and not (tmp_path / "store" / "data").exists()
    # small but normal: scaled exactly like the same shape at unit size
    small = userdata.parse(csv_of(cloud() * 1e-300))
    np.testing.assert_allclose(userdata.scaled(small), userdata.scaled(cloud()), atol=1e-9)
