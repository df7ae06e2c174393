"""Your own point cloud: a CSV (or drawn points) checked, named by its content and scaled like the
paper's data.

- **Input**: a CSV of two numeric columns, x and y, with an optional header line (commas, tabs or
  spaces between them; or semicolons, and then a comma is the decimal mark: `0,126;-0,132`).
  Refused in one line that names the line of the file: an empty or binary file, a line of one
  column or of more than two, a non-number (quoted as it is in the file), NaN or inf, fewer than
  MIN_DISTINCT distinct points, every point identical, more than MAX_ROWS rows, a file over
  MAX_BYTES, and points that cannot be scaled (a spread below the smallest normal double, or
  outliers so far out that fewer than MIN_DISTINCT points stay apart in float32 once scaled): every
  check is made before anything is stored, so a dataset that is kept can be trained.
- **Name**: `<label>-<hash>`: the label is the file's stem made safe (lower case, a-z 0-9 _,
  at most 20 characters), the hash the first 12 hex of the SHA-256 of the parsed points (float64,
  in the file's order). A point that moves changes the name, so the run id, so no run is ever
  judged against data it was not trained on.
- **Scaling**: centred on the middle of its bounding box and scaled so that its larger half-range
  is SPAN (3: the paper's clouds reach about 3 from the origin: the circle's radius, the line's
  half-height 2, the dino's 2.4-4.3), keeping the aspect ratio; computed in halves, so values
  near the float64 limit scale without overflow.
- **Training set** (make_dataset): `n_points` draws with replacement from the scaled points, each
  jittered by N(0, JITTER^2) in both coordinates, from default_rng(seed), as the dino recipe does
  with its 142 points (its jitter is 0.011-0.013 in these units; 0.02 makes a cloud of a few dozen
  drawn points a continuous density, which the kNN KL needs).

The points live in the run store (Store.save_data: <store>/data/<hash>.npy); make_dataset finds
them through `register` (this process) or the folders in DUALSCALE_DATA (its workers).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np

SPAN = 3.0
JITTER = 0.02
MIN_DISTINCT = 10
MAX_ROWS = 1_000_000
MAX_BYTES = 50 * 2**20
NAME = re.compile(r"^[a-z0-9_]{1,20}-[0-9a-f]{12}$")
_REGISTERED: dict[str, np.ndarray] = {}


def is_user_dataset(name: str) -> bool:
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def label_of(filename: str) -> str:
    """'My points (v2).csv' -> 'my_points_v2'."""
    stem = re.sub(r"[^a-z0-9]+", "_", Path(filename or "points").stem.lower()).strip("_")
    return stem[:20].strip("_") or "points"


def parse(raw: bytes) -> np.ndarray:
    """The (n, 2) float64 points of a CSV's bytes, or a one-line ValueError saying what is wrong
    (with the number of the line in the file, and the offending text quoted as it is there)."""
    if len(raw) > MAX_BYTES:
        raise ValueError(f"the file is {len(raw) / 2**20:.1f} MB; at most {MAX_BYTES // 2**20} MB")
    if not raw.strip():
        raise ValueError("the file is empty: it needs two columns of numbers, x and y")
    if b"\0" in raw:
        raise ValueError("the file is not text (it holds binary data): save the points as CSV")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text: save the points as CSV")
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise ValueError("the file is empty: it needs two columns of numbers, x and y")
    if len(lines) > MAX_ROWS + 1:
        raise ValueError(f"the file has {len(lines):,} rows; at most {MAX_ROWS:,} points")
    # Semicolons between the columns: the comma is then the decimal mark (0,126;-0,132).
    decimal_comma = any(";" in line for _, line in lines)
    split = re.compile(r"[;\t ]+" if decimal_comma else r"[,\t ]+")
    if any(_number(cell, decimal_comma) is None for cell in split.split(lines[0][1]) if cell):
        lines = lines[1:]  # a header line
    points = []
    for number, line in lines:
        cells = [cell for cell in split.split(line) if cell]
        if len(cells) != 2:
            raise ValueError(f"expected two columns x, y; line {number} has {len(cells)}: {_quote(line)}")
        try:
            points.append([float(cell.replace(",", ".") if decimal_comma else cell) for cell in cells])
        except ValueError:
            cell = next(cell for cell in cells if _number(cell, decimal_comma) is None)
            raise ValueError(f"line {number}: {_quote(cell)} is not a number (x and y must be numbers)") from None
    return check(np.array(points, dtype=np.float64).reshape(-1, 2))


def _number(cell: str, decimal_comma: bool) -> float | None:
    try:
        return float(cell.replace(",", ".") if decimal_comma else cell)
    except ValueError:
        return None


def _quote(text: str, limit: int = 40) -> str:
    """The text as it is in the file, quoted (repr: one line, whatever it holds), cut at `limit`."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def check(points: np.ndarray) -> np.ndarray:
    """The points themselves must be usable: finite, enough distinct ones, not all one point, and
    scalable into the paper's range without losing them (see `scaled`)."""
    if len(points) == 0:
        raise ValueError("there are no points")
    if not np.all(np.isfinite(points)):
        raise ValueError("the points hold NaN or inf: every x and y must be a finite number")
    if len(points) > MAX_ROWS:
        raise ValueError(f"{len(points):,} points; at most {MAX_ROWS:,}")
    distinct = len(np.unique(points, axis=0))
    if distinct == 1:
        raise ValueError("every point is the same point: there is no shape to learn")
    if distinct < MIN_DISTINCT:
        raise ValueError(f"only {distinct} distinct points; at least {MIN_DISTINCT} are needed")
    half = _half_range(points)
    if not half > 0:
        raise ValueError("the points have no extent")
    if half < np.finfo(np.float64).tiny:  # subnormal: the differences between the points keep few digits
        raise ValueError(f"the points span only {2 * half:.3g}, too little to scale without losing digits (at least "
                         f"{2 * np.finfo(np.float64).tiny:.3g}): multiply every value by a power of ten, 1e300 say")
    trained = scaled(points).astype(np.float32)  # what training sees (make_dataset is float32)
    kept = len(np.unique(trained, axis=0)) if np.all(np.isfinite(trained)) else 0
    if kept < MIN_DISTINCT:
        raise ValueError(f"scaled into the paper's range, only {kept} of the {distinct} distinct points stay apart "
                         f"(values as far out as {np.abs(points).max():.3g} squeeze the rest together): remove "
                         "the outliers")
    return points


def _half_range(points: np.ndarray) -> float:
    """The larger half-range of the bounding box, without overflow (hi - lo can exceed float64)."""
    lo, hi = points.min(0), points.max(0)
    return float((hi / 2 - lo / 2).max())


def content_hash(points: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(points, dtype=np.float64).tobytes()).hexdigest()[:12]


def name_of(points: np.ndarray, label: str) -> str:
    return f"{label_of(label)}-{content_hash(points)}"


def scaled(points: np.ndarray) -> np.ndarray:
    """Centred on the middle of the bounding box, the larger half-range SPAN, aspect kept."""
    lo, hi = points.min(0), points.max(0)
    middle = lo / 2 + hi / 2  # halves first: (lo + hi) and (hi - lo) overflow near the float64 limit
    return (points - middle) / _half_range(points) * SPAN


def register(name: str, points: np.ndarray) -> None:
    """Make `name`'s points known to make_dataset in this process (as given: unscaled)."""
    if content_hash(points) != name.rsplit("-", 1)[-1]:
        raise ValueError(f"these points do not have the hash of {name!r}")
    _REGISTERED[name] = np.asarray(points, dtype=np.float64)


def points_of(name: str) -> np.ndarray:
    """The raw points of a user dataset: registered here, or in a data folder of DUALSCALE_DATA."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    digest = name.rsplit("-", 1)[-1]
    for folder in filter(None, os.environ.get("DUALSCALE_DATA", "").split(os.pathsep)):
        path = Path(folder) / f"{digest}.npy"
        if path.is_file():
            points = np.load(path, allow_pickle=False)
            if content_hash(points) == digest:  # a damaged or swapped file is not these data
                _REGISTERED[name] = points
                return points
    raise ValueError(f"the data of dataset {name!r} are not in this store (import the CSV with --data-file)")


def training_points(name: str, n: int, seed: int) -> np.ndarray:
    """make_dataset for a user dataset: n jittered draws from its scaled points."""
    base = scaled(points_of(name))
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, len(base), n)
    return base[ix] + JITTER * rng.normal(size=(n, 2))


def read_csv(path: str | os.PathLike) -> np.ndarray:
    """parse() of a file on disk; a missing or unreadable file is a one-line ValueError too."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise ValueError(f"{path} is not a file")
        if size > MAX_BYTES:
            raise ValueError(f"{path} is {size / 2**20:.1f} MB; at most {MAX_BYTES // 2**20} MB")
        raw = p.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}")
    try:
        return parse(raw)
    except ValueError as e:
        raise ValueError(f"{Path(path).name}: {e}")


def to_csv(points: np.ndarray) -> str:
    out = io.StringIO()
    np.savetxt(out, points, delimiter=",", header="x,y", comments="", fmt="%.9g")
    return out.getvalue()
