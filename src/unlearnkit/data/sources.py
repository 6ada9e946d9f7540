"""One entry point for every data source: ``load_task(source, **options)``.

``source`` is a name users write in a config (``synthetic``, ``tofu``, ``custom``); ``options`` are passed to the
source's loader as keyword arguments, checked against its signature first so that a misspelt option is reported
with the list of accepted ones. The task is validated (:func:`unlearnkit.data.validation.validate_task`) before it
is returned.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from unlearnkit.data.corpus import CorpusTask, load_corpus_task
from unlearnkit.data.custom import load_custom_task
from unlearnkit.data.synthetic import make_synthetic_task
from unlearnkit.data.synthetic_corpus import synthetic_corpus_task
from unlearnkit.data.tofu import load_tofu
from unlearnkit.data.types import Task
from unlearnkit.data.validation import validate_task
from unlearnkit.errors import ConfigError

SOURCES: dict[str, Callable[..., Task | CorpusTask]] = {
    "synthetic": make_synthetic_task,
    "tofu": load_tofu,
    "custom": load_custom_task,
    "corpus": load_corpus_task,  # raw-text (MUSE-style) tasks: evaluated by `unlearnkit eval`
    "synthetic_corpus": synthetic_corpus_task,
}
CORPUS_SOURCES = ("corpus", "synthetic_corpus")


def source_options(source: str) -> dict[str, Any]:
    """The options ``source`` accepts, each with its default (``inspect.Parameter.empty`` when required)."""
    if source not in SOURCES:
        raise ConfigError(f"unknown data source '{source}': use one of {', '.join(SOURCES)}")
    return {name: p.default for name, p in inspect.signature(SOURCES[source]).parameters.items()}


def load_task(source: str, **options: Any) -> Task | CorpusTask:
    """The validated task of ``source`` built with ``options`` (see each loader for its options): a QA
    :class:`Task`, or a raw-text :class:`CorpusTask` for the corpus sources."""
    accepted = source_options(source)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for data source '{source}': accepted "
                              f"options are {', '.join(accepted)}")
    missing = [name for name, default in accepted.items() if default is inspect.Parameter.empty and name not in options]
    if missing:
        raise ConfigError(f"data source '{source}' needs the option(s) {', '.join(missing)}: add them to the "
                              "data options")
    task = SOURCES[source](**options)
    if isinstance(task, Task):
        validate_task(task)
    return task
