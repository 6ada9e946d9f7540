"""The metric table: one declaration per metric, which everything that names metrics reads.

A :class:`Metric` says, in one place, what a metric is and how it is handled: its suite and name, its one-line
meaning, which way is better, what it asks of the scoring pass (``plan``: the (question, answer) pairs to score and
the questions to answer greedily), how its value is computed from those scores (``compute``, a pure function),
which other metrics it is computed from (``depends``), whether it compares with the retain model (``reference``),
how its bootstrap interval is drawn (``interval``) and how two runs are compared on it (``paired``).

The suites plan, score and compute from the table (:mod:`unlearnkit.evaluation.suites`), the intervals
(:mod:`.intervals`), the training monitor's choices, the CLI's headline, ``unlearnkit compare`` and the report read
it. Adding a metric is one declaration, ``register(Metric(...))``, in a module of this package (every module of
``unlearnkit.evaluation.metrics`` is imported when the table is first read), plus its test.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

from unlearnkit.errors import UnlearnkitError

Suite = Literal["tofu", "muse"]
Better = Literal["higher", "lower", "retain"]  # "retain": the closer to the retain model's value, the better
# How the bootstrap interval is drawn (see intervals.py): the mean of per_example[name]; a truth-ratio aggregate of
# per_example[name]; an ROC AUC of per_example[name_forget] vs [name_holdout]; or one of the cross-split metrics.
IntervalKind = Literal["mean", "truth_ratio_forget", "truth_ratio", "auc", "privleak", "forget_quality",
                       "forget_quality_log10", "model_utility"]
Paired = Literal["mean", "truth_ratio_forget", "truth_ratio"]


@dataclass
class Computed:
    """A computed metric: its aggregate, its per-example lists (by key) and the generations it read (by split)."""

    aggregate: float | None
    per_example: dict[str, list] = field(default_factory=dict)
    generations: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Inputs:
    """What a metric's ``compute`` reads: the task, the scoring pass, the metrics computed before it, the reference.

    ``scores``: (question, answer) → :class:`~unlearnkit.evaluation.scoring.passes.PairScore` (raw text → its score
    for text suites); ``generations``: question → greedy answer; ``aggregates`` / ``per_example``: the metrics this
    one depends on, already computed; ``reference``: the retain model's statistics
    (:meth:`~unlearnkit.evaluation.suites.result.EvalResult.reference_stats`), ``{}`` without one; ``model`` and
    ``formatter``: for the opt-in metrics that run the model themselves (gradnorm), ``None`` otherwise. ``texts``:
    a text suite's scored chunks by split.
    """

    task: Any = None
    scores: dict = field(default_factory=dict)
    generations: dict = field(default_factory=dict)
    aggregates: dict = field(default_factory=dict)
    per_example: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    model: Any = None
    formatter: Any = None
    texts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """One metric's declaration (see the module docstring)."""

    name: str
    suite: Suite
    meaning: str
    better: Better
    compute: Callable[[Inputs], Computed]
    plan: Callable[[Any, Any], None] | None = None  # (task, the suite's plan) → adds pairs / questions to score
    depends: tuple[str, ...] = ()
    reference: bool = False  # compares with the retain model (None without its statistics)
    interval: IntervalKind | None = "mean"
    paired: Paired | None = None  # per-example values of the same examples in two runs: compare's paired test
    headline: bool = False  # printed by the CLI and shown first in the report
    opt_in: bool = False  # computed only when asked for by name (costly: e.g. a backward pass per example)


_TABLE: dict[tuple[str, str], Metric] = {}
_LOADED = False


def register(metric: Metric) -> Metric:
    key = (metric.suite, metric.name)
    if key in _TABLE:
        raise ValueError(f"metric {metric.name!r} of the {metric.suite} suite declared twice")
    _TABLE[key] = metric
    return metric


def unregister(suite: str, name: str) -> None:
    """Remove a declaration (for tests that declare a metric of their own)."""
    _TABLE.pop((suite, name), None)


def _load() -> None:
    global _LOADED
    if not _LOADED:
        import unlearnkit.evaluation.metrics as package

        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
        _LOADED = True


def metrics_of(suite: str) -> dict[str, Metric]:
    """The suite's metrics by name, in declaration order."""
    _load()
    return {name: metric for (s, name), metric in _TABLE.items() if s == suite}


def metric(name: str, suite: str | None = None) -> Metric | None:
    """The declaration of ``name`` (in ``suite``, else in whichever suite declares it first), or None."""
    _load()
    for (s, n), declared in _TABLE.items():
        if n == name and (suite is None or s == suite):
            return declared
    return None


def names(suite: str, include_opt_in: bool = True) -> tuple[str, ...]:
    return tuple(n for n, m in metrics_of(suite).items() if include_opt_in or not m.opt_in)


def headline() -> tuple[str, ...]:
    """The headline metrics of every suite, in declaration order, each name once."""
    _load()
    return tuple(dict.fromkeys(name for (_, name), m in _TABLE.items() if m.headline))


def resolve(suite: str, wanted: Iterable[str] | None) -> set[str]:
    """The requested metric names plus everything they depend on; every metric but the opt-in ones when None."""
    table = metrics_of(suite)
    if wanted is None:
        return {name for name, m in table.items() if not m.opt_in}
    chosen = set(wanted)
    unknown = sorted(chosen - set(table))
    if unknown:
        raise UnlearnkitError(f"unknown {suite.upper()} metric(s) {unknown}: choose from {', '.join(table)}")
    pending = list(chosen)
    while pending:
        for dependency in table[pending.pop()].depends:
            if dependency not in chosen:
                chosen.add(dependency)
                pending.append(dependency)
    return chosen


def in_order(suite: str, wanted: Iterable[str]) -> list[Metric]:
    """The wanted metrics, each after the metrics it depends on (declaration order otherwise)."""
    table, chosen = metrics_of(suite), set(wanted)
    done: list[Metric] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dependency in table[name].depends:
            if dependency in chosen:
                visit(dependency)
        done.append(table[name])

    for name in table:
        if name in chosen:
            visit(name)
    return done
