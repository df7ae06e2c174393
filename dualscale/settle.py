"""Settle: add seeds until a family's comparisons are decided, or the budget is spent.

One round: judge the family (stats.compare over the stored runs with the chosen settings); for
each undecided comparison, the next `batch` seeds of only the variants it needs (`plan`); train
them with any engine; judge again. The loop holds no state of its own: every round starts from
what the store holds, so a settle killed at any point continues where it stopped, never
retrains a stored run, and never counts a half-written one (the store's writes are atomic).
The command line (`python -m dualscale settle`) and the dashboard's Verdict page both drive it.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

from .config import TrainConfig, same_settings
from .data import PAPER_DATASETS
from .stats import CONFIRM, CONFIRMATORY, PAIRS, UNDECIDED, Comparison, Verdicts, compare, family_of

FAMILIES = ("primary", CONFIRMATORY)  # what settle can settle (primary: with --metric, its secondary family)


@dataclass(frozen=True)
class Round:
    """What one look at the family found, and what it asks for next."""
    family: list[Comparison]   # the family's comparisons on the chosen datasets (judged)
    open: list[Comparison]     # those still undecided
    missing: list[str]         # datasets with fewer than 2 paired seeds of some pair: not judged yet
    todo: list[TrainConfig]    # the next batch (empty: decided, or the budget is spent)
    spent: bool                # the budget stops it: every open comparison has budget_seeds seeds


def judge(runs, settings: TrainConfig, metric: str = "kl_divergence") -> Verdicts:
    """The verdict on `metric` over the stored runs with these training settings (any dataset, variant, seed)."""
    from .paper import metrics_frame

    same = [r for r in runs if same_settings(r.config, settings)]
    return compare(metrics_frame(same), [metric]) if same else Verdicts()


def plan(runs, settings: TrainConfig, datasets=PAPER_DATASETS, metric: str = "kl_divergence",
         budget_seeds: int = 100, batch: int = 10, family: str = "primary") -> Round:
    """Judge, then choose the next batch: for each dataset, the variants its undecided comparisons
    need (all three where a pair has fewer than 2 seeds), and for those the `batch` lowest seeds
    below `budget_seeds` that some of them lack. family=CONFIRMATORY: the declared family
    (stats.CONFIRM) on its dataset and metric, seeds from its first fresh seed, `budget_seeds` of them."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from: {', '.join(FAMILIES)}")
    first = 0
    if family == CONFIRMATORY:
        datasets, metric, first = (CONFIRM.dataset,), CONFIRM.metric, CONFIRM.first_seed
    verdicts = judge(runs, settings, metric)
    mine = [c for c in verdicts.comparisons if c.dataset in datasets and c.metric == metric]
    family_ = [c for c in mine if (c.family == CONFIRMATORY) == (family == CONFIRMATORY)]
    open_ = [c for c in family_ if c.decision == UNDECIDED]
    judged = {(c.dataset, c.a, c.b) for c in family_}
    missing = [d for d in datasets if any((d, a, b) not in judged for a, b in PAIRS)]
    need: dict[str, set] = {d: {v for a, b in PAIRS for v in (a, b)} for d in missing}
    for c in open_:
        need.setdefault(c.dataset, set()).update((c.a, c.b))
    have = {(r.config.dataset, r.config.variant, r.config.seed) for r in runs if same_settings(r.config, settings)}
    todo = []
    for dataset in datasets:
        variants = sorted(need.get(dataset, ()))
        lacking = (s for s in range(first, first + budget_seeds) if any((dataset, v, s) not in have for v in variants))
        todo += [TrainConfig(**{**settings.to_dict(), "dataset": dataset, "variant": v, "seed": s})
                 for s in islice(lacking, batch) for v in variants if (dataset, v, s) not in have]
    return Round(family_, open_, missing, todo, spent=bool(open_ or missing) and not todo)


def family_label(metric: str, dataset: str = PAPER_DATASETS[0], family: str = "primary") -> str:
    """'primary (12 comparisons)', 'secondary: eval_loss (12 comparisons)', 'secondary: kl_divergence
    on spiral-3f2a (3 comparisons)', 'confirmatory (3 comparisons, dino, seeds 68 and up)'."""
    if family == CONFIRMATORY:
        return f"{CONFIRMATORY} ({CONFIRM.size} comparisons, {CONFIRM.dataset}, seeds {CONFIRM.first_seed} and up)"
    name, size = family_of(metric, dataset)
    return f"{name} ({size} comparisons)"


class Sweep:
    """Seeds added through the dashboard's Runner, in rounds: the first round is exactly the confirmed
    plan (`todo`); with rounds=None (Settle) each finished round is judged again and the next planned
    until the family is decided or the budget spent. Held server-wide by the dashboard, so a reload
    finds it; `advance(runs)` on every poll moves it on."""

    def __init__(self, runner, todo: list[TrainConfig], settings: TrainConfig, datasets=PAPER_DATASETS,
                 metric: str = "kl_divergence", batch: int = 5, budget: int = 100, rounds: int | None = 1):
        self.runner, self.settings, self.datasets, self.metric = runner, settings, tuple(datasets), metric
        self.batch, self.budget, self.rounds = batch, budget, rounds
        self.ids: list[str] = []
        self.current: list[str] = []
        self.state = "running"  # running | cancelled | decided | spent | done
        self.rounds_done = 0
        self._submit(todo)

    def _submit(self, todo: list[TrainConfig]) -> None:
        self.current = [self.runner.submit(c) for c in todo]
        self.ids += self.current

    def counts(self) -> dict[str, int]:
        """How many of the submitted runs are done, failed, cancelled, training, waiting."""
        out = {"done": 0, "failed": 0, "cancelled": 0, "training": 0, "waiting": 0}
        for rid in self.ids:
            state = self.runner.status(rid).state
            key = {"queued": "waiting", "done": "done", "failed": "failed", "cancelled": "cancelled"}.get(state, "training")
            out[key] += 1
        return out

    def advance(self, runs) -> None:
        """If the current round has finished, judge and plan the next (Settle), or finish."""
        if self.state != "running":
            return
        if any(self.runner.status(rid).state not in ("done", "failed", "cancelled") for rid in self.current):
            return
        self.rounds_done += 1
        if self.rounds is not None and self.rounds_done >= self.rounds:
            self.state = "done"
            return
        rnd = plan(runs, self.settings, self.datasets, self.metric, self.budget, self.batch)
        if not rnd.todo:
            self.state = "spent" if (rnd.open or rnd.missing) else "decided"
            return
        self._submit(rnd.todo)

    def cancel(self) -> None:
        self.state = "cancelled"
        for rid in self.ids:
            self.runner.cancel(rid)
