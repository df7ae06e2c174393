"""What every page shares: the store, the job registry, cached loads, the sidebar's selection.

Not a page (app.py registers pages explicitly with st.navigation). Heavy things are cached:
the store and the job registry once per store root (st.cache_resource: one registry for every
browser session, so all of them see the same background runs), arrays and figures per run
(st.cache_data keyed by the run's id and the time its folder changed, so a retrained run is
never shown stale).
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import streamlit as st

from dualscale import Store, StoreError, TrainConfig, make_dataset
from dualscale.config import training_settings
from dualscale.runner import Runner
from dualscale.system import dashboard_workers

SETTINGS = tuple(f.name for f in training_settings())
PREVIEWS = 10  # progress events that carry alpha(t) and a few samples (~0.1 s each on a CPU)

# A page shows a container keyed "wide_..." above 640 px and one keyed "narrow_..." below (a phone),
# for what would be cramped or scroll sideways at 390 px: Results' tables, Samples' and Schedules' figures.
WIDTH_SWITCH = """<style>
[class*="st-key-narrow_"] { display: none; }
@media (max-width: 640px) {
  [class*="st-key-wide_"] { display: none; }
  [class*="st-key-narrow_"] { display: block; }
}
</style>"""


def wide_or_narrow(key: str):
    """The two containers of one thing: (wide, narrow). Only one of them shows, by the window's width."""
    st.html(WIDTH_SWITCH)
    return st.container(key=f"wide_{key}"), st.container(key=f"narrow_{key}")


def literal(text: str) -> str:
    """Markdown that shows `text` exactly as written, on one line: a code span, whose content markdown
    never reads (no link, image, emphasis, emoji, colour, autolinked address or formula), fenced by
    more backticks than any run of them inside. For text from outside: the address, file and folder
    names, file contents, a run's error. (Backslash-escaping is not enough: the frontend still
    autolinks an escaped address, measured in Chromium.)"""
    text = " ".join(str(text).splitlines()) or " "
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def count(n: int, noun: str) -> str:
    """'1 run', '12 runs', '1,000 runs'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def store_root() -> str:
    """Where runs live; tests point DUALSCALE_STORE at a temp folder."""
    return os.environ.get("DUALSCALE_STORE", "checkpoints")


@st.cache_resource(show_spinner=False)
def _store(root: str) -> Store:
    store = Store(root)  # its user datasets, for this server and the workers it starts
    data = str(store.data_folder().resolve())
    if data not in os.environ.get("DUALSCALE_DATA", "").split(os.pathsep):
        os.environ["DUALSCALE_DATA"] = os.pathsep.join(filter(None, [data, os.environ.get("DUALSCALE_DATA")]))
    return store


@st.cache_resource(show_spinner=False)
def _registry(root: str) -> Runner:
    """The background runs: one worker per run, at most system.dashboard_workers() at once (the rest
    queue), a core kept for the server, workers niced."""
    device = os.environ.get("DUALSCALE_DEVICE", "auto")
    try:
        jobs, note = dashboard_workers(device), None
    except ValueError as e:  # DUALSCALE_WORKERS=abc: say so on Train, use the default
        jobs = dashboard_workers(device, use_env=False)
        note = f"{e}; using {jobs}."
    runner = Runner(_store(root), device=device, jobs=jobs, reserve=1, niceness=10, previews=PREVIEWS)
    runner.note = note
    return runner


def store() -> Store:
    return _store(store_root())


def registry() -> Runner:
    return _registry(store_root())


# --------------------------------------------------------------------------- selection

@dataclasses.dataclass(frozen=True)
class Selection:
    """The sidebar's choices. `config` is None when the advanced settings are impossible."""
    dataset: str
    variant: str
    seed: int
    config: TrainConfig | None
    error: str | None

    @property
    def settings(self) -> TrainConfig:
        """A valid config for lookups: the sidebar's, or the reference defaults if it is invalid."""
        return self.config or TrainConfig(dataset=self.dataset, variant=self.variant)


def selection(unused: str = "") -> Selection:
    """Read what app.py's sidebar stored for this rerun; `unused` names the sidebar controls this
    page ignores, and the sidebar says so under them."""
    if unused:
        st.sidebar.caption(f":material/info: Not used on this page: {unused}.")
    return st.session_state["selection"]


# --------------------------------------------------------------------------- runs

def stamp(run) -> int:
    """Changes when a run is rewritten (retrained): part of every cache key below."""
    try:
        return os.stat(run.path).st_mtime_ns
    except OSError:
        return 0


def all_runs() -> list:
    return store().runs()


def same_config_settings(a: TrainConfig, b: TrainConfig) -> bool:
    from dualscale.config import same_settings as same

    return same(a, b)


def pick_run(dataset: str, variant: str, settings: TrainConfig, runs=None):
    """The stored run to show for a selection, among runs with the sidebar's training settings only
    (like with like): the sidebar's seed if stored, else a shipped reference run, else the newest."""
    runs = [r for r in (runs if runs is not None else all_runs())
            if r.config.dataset == dataset and r.config.variant == variant and same_config_settings(r.config, settings)]
    if not runs:
        return None
    return max(runs, key=lambda r: (r.config.seed == settings.seed, r.shipped, stamp(r)))


def left_out(runs, settings: TrainConfig, dataset: str | None = None) -> str:
    """A caption for the runs a page leaves out because their settings differ ('' when none)."""
    other = [r for r in runs if not same_config_settings(r.config, settings)
             and (dataset is None or r.config.dataset == dataset)]
    if not other:
        return ""
    kinds = sorted({settings_label(r.config) for r in other})
    return (f"{len(other)} stored runs with other settings are not shown here ({'; '.join(kinds[:3])}"
            f"{'; ...' if len(kinds) > 3 else ''}): set them in the sidebar's Advanced settings to see them.")


def same_settings(frame, settings: TrainConfig):
    """The rows of a metrics frame whose training settings are `settings`' (any dataset, variant, seed)."""
    if frame.empty:
        return frame
    mask = [all(row[k] == getattr(settings, k) for k in SETTINGS) for row in frame.to_dict("records")]
    return frame[mask]


def settings_label(settings: TrainConfig) -> str:
    """'the reference settings', or what differs from them."""
    from dualscale.config import changed_settings

    changed = changed_settings(settings)
    return "the reference settings" if not changed else ", ".join(f"{k} {v}" for k, v in changed.items())


def describe(run, seed: int | None = None) -> str:
    """Which run a panel shows: seed, length, origin and id (the variant is the panel's name); says
    so when it is not the sidebar's seed."""
    c = run.config
    origin = f"shipped {run.path.parent.name}" if run.shipped else "local"
    other = f" (seed {seed} is not stored)" if seed is not None and seed != c.seed else ""
    light = ", light: no trajectory" if run.light else ""
    return f"seed {c.seed}{other}, {c.steps:,} steps ({origin} run `{run.id}`{light})"


@st.cache_data(max_entries=256, show_spinner=False)
def _load(root: str, run_id: str, stamp_: int, what: str):
    run = _store(root).get(run_id)
    return getattr(run, what)()


def load(run, what: str):
    """run.samples() / .alpha() / .loss_history() / .trajectory(), cached per run version.

    A damaged run file gives a one-line warning and None, never a traceback on the page.
    """
    try:
        return _load(store_root(), run.id, stamp(run), what)
    except StoreError as e:
        st.warning(literal(str(e).splitlines()[0]))
        return None


def forget_arrays() -> None:
    """Drop the cached arrays of every run (after deleting runs: frees their memory; no entry could
    show stale anyway, being keyed by run id and folder time)."""
    _load.clear()


@st.cache_data(max_entries=16, show_spinner=False)
def _verdict(root: str, key: tuple):
    from dualscale.stats import verdict_of

    return verdict_of(_store(root).runs(), _store(root))


def verdict():
    """THE verdict over every stored run (stats.verdict_of: the one object the Verdict and Results
    pages, the CSV and the command line read), recomputed when a run changes, kept in the store's
    cache so a fresh server answers without pandas and scipy."""
    runs = all_runs()
    return _verdict(store_root(), tuple(sorted((r.id, stamp(r)) for r in runs)))


def datasets() -> tuple[str, ...]:
    """Every dataset the sidebar offers: the paper's, the Datasaurus shapes, and the user's own
    (stored in this store's data/, or with runs in it)."""
    from dualscale import DATASETS
    from dualscale.userdata import is_user_dataset

    mine = set(store().datasets()) | {r.config.dataset for r in all_runs() if is_user_dataset(r.config.dataset)}
    return DATASETS + tuple(sorted(mine))


def settings_comparisons(verdicts, settings: TrainConfig) -> list:
    """The comparisons among runs with these training settings (the verdict labels each by them)."""
    from dualscale.config import settings_tag

    return [c for c in verdicts.comparisons if c.settings == settings_tag(settings)]


@st.cache_resource(show_spinner=False)
def _sweeps(root: str) -> dict:
    return {}


def sweeps() -> dict:
    """The dashboard's seed sweeps (add seeds, settle), server-wide: {settings JSON: settle.Sweep}.
    A reload or another browser session finds them."""
    return _sweeps(store_root())


@st.cache_data(max_entries=32, show_spinner=False)
def real_points(dataset: str, n: int = 20_000) -> np.ndarray:
    """Real data for backgrounds (the reference's seed-42 draw; a subset is plenty to see)."""
    return make_dataset(dataset, n)


