"""unlearnkit: make a trained model forget specific data, and prove that it did.

The Python API is two functions; the ``unlearnkit`` command line is a thin layer over them.

- :func:`unlearn` runs one unlearning job (task → target/retain models → method → evaluation → run directory).
- :func:`evaluate` scores one model on a task: the TOFU suite for QA tasks, the MUSE suite for raw text.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from unlearnkit.data.corpus import CorpusTask
    from unlearnkit.data.types import Task
    from unlearnkit.evaluation.suites.result import EvalResult
    from unlearnkit.pipeline import RunResult


def unlearn(config: "str | Path | dict | Any | None" = None, *, resume: bool = False, progress: bool = True,
            **overrides: Any) -> "RunResult":
    """Run an unlearning job and return its run directory and results.

    ``config`` is a YAML path, a dict in the YAML's shape, a :class:`unlearnkit.config.RunConfig`, or None for the
    built-in default (synthetic task, ``tiny`` base, NPO). ``overrides`` are dotted keys with ``__`` for the dots,
    e.g. ``unlearn("run.yaml", method__name="simnpo", output_dir="runs/x")``.
    """
    from unlearnkit.config import RunConfig, load_config, parse_config, set_dotted
    from unlearnkit.pipeline import run

    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    if isinstance(config, (str, Path)):
        cfg = load_config(config, dotted)
    else:
        data = config.model_dump() if isinstance(config, RunConfig) else dict(config or {})
        for key, value in dotted.items():
            set_dotted(data, key, value)
        cfg = parse_config(data)
    return run(cfg, resume=resume, progress=progress)


def evaluate(model: Any, task: "Task | CorpusTask", *, tokenizer: Any = None, reference: dict | None = None,
             metrics: "list[str] | None" = None, max_length: int = 256, template: str = "auto",
             batch_size: int = 16, max_new_tokens: int = 200, intervals: bool = True,
             progress: bool = False) -> "EvalResult":
    """Evaluate ``model`` (a model folder, or a loaded model with its ``tokenizer``) on ``task``.

    A QA task gets the TOFU suite, a raw-text (corpus) task the MUSE suite; ``metrics`` picks among the suite's
    metrics (default: all but the opt-in ones). ``reference`` is the retain model's ``EvalResult.reference_stats()``:
    it enables forget_quality and privleak. ``intervals``: a 95% bootstrap interval for every aggregate.
    """
    from unlearnkit.config import EvalConfig
    from unlearnkit.data.formatting import QAFormatter
    from unlearnkit.evaluation.evaluator import Evaluator
    from unlearnkit.models.load import load_causal_lm

    if isinstance(model, (str, Path)):
        model, tokenizer = load_causal_lm(model)
    elif tokenizer is None:
        raise TypeError("evaluate(model, ...) with a loaded model needs tokenizer=...")
    formatter = QAFormatter(tokenizer, max_length=max_length, template=template)
    config = EvalConfig(batch_size=batch_size, max_new_tokens=max_new_tokens, intervals=intervals)
    return Evaluator(task, formatter, config, metrics=metrics, store=False, progress=progress).evaluate(model, reference)
