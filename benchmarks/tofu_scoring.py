"""TOFU-suite scoring time against a bare batched forward pass over the same tokens; evaluate_tofu end to end.

What is measured (CPU, float32, ``torch.set_num_threads`` set explicitly and printed):

1. ``score_pairs(..., share_prompts=False)`` over every (question, answer) pair the TOFU suite plans for all of its
   metrics (the suite's own plan, ``unlearnkit.evaluation.suites.tofu.plan_tofu``): encoding, length sorting, right-padded
   batches of whole sequences, the forward pass and the per-answer-token log-probabilities and argmax matches.
2. A bare batched forward pass: ``model(input_ids=..., attention_mask=...).logits`` under ``torch.inference_mode()``
   in eval mode, over the same distinct encoded sequences, sorted by length the same way and cut into the same
   batches. The batches are built before the clock starts: nothing but the forward passes is timed.
3. ``score_pairs`` as the suite runs it (``share_prompts=True``: each batch runs its questions' prompts once and the
   answers on the prompts' KV cache, :mod:`unlearnkit.evaluation.scoring.prompt_sharing`).

All run once as a warm-up, then ``--repeats`` times, interleaved; the medians give the ratio bare / (1), the
teacher-forced scoring throughput as a fraction of a bare forward pass over the same tokens (1.0 = the scoring adds
nothing to the forward pass), and bare / (3), the speed-up of prompt sharing over that bare pass.

3. The whole ``evaluate_tofu`` (every metric, greedy generation included), ``--eval-repeats`` times; during each
   call the time spent inside ``score_pairs`` and ``generate_answers`` is recorded by wrapping those two
   functions, so the split into scoring / generation / the rest (planning and metrics) comes from the same calls.

Defaults: the ``tiny`` base (random weights: speed does not depend on what the weights know) on the synthetic
task. Examples::

    python benchmarks/tofu_scoring.py
    python benchmarks/tofu_scoring.py --model smollm2-135m --max-examples 10 --max-new-tokens 32
    python benchmarks/tofu_scoring.py --tofu ../shared/data/tofu --split forget01 --max-examples 40

Nothing is written unless ``--json PATH`` is given (except that the first ``--model smollm2-135m`` run fills
unlearnkit's model cache, see ``subjects.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from measurement import interleaved_medians, median, spread, table  # noqa: E402
from subjects import add_subject_options, describe_model, load_model, load_task, positive_int, set_threads  # noqa: E402
from unlearnkit.data.formatting import QAFormatter, collate  # noqa: E402
from unlearnkit.evaluation.suites import tofu as suite# noqa: E402
from unlearnkit.evaluation.scoring.passes import score_pairs  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_subject_options(parser, default_model="tiny")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="batch size of scoring, generation and the bare pass")
    parser.add_argument("--max-new-tokens", type=positive_int, default=200, help="greedy generation length bound (TOFU: 200)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs of score_pairs and of the bare pass")
    parser.add_argument("--eval-repeats", type=positive_int, default=3, help="timed runs of the whole evaluate_tofu")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def bare_batches(formatter: QAFormatter, pairs: list[tuple[str, str]], batch_size: int) -> list[dict]:
    """The padded batches ``score_pairs`` runs: distinct pairs, longest first, right-padded, ``batch_size`` rows."""
    unique = list(dict.fromkeys(pairs))
    encoded = {pair: formatter.encode(*pair) for pair in unique}
    ordered = sorted(unique, key=lambda p: len(encoded[p].input_ids), reverse=True)
    batches = []
    for start in range(0, len(ordered), batch_size):
        batch = collate([encoded[p] for p in ordered[start : start + batch_size]], formatter.pad_token_id, "right")
        batches.append({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    return batches


def bare_forward(model, batches: list[dict]) -> None:
    with torch.inference_mode():
        for batch in batches:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@contextmanager
def time_inside_suite(names: tuple[str, ...]):
    """Wrap ``suite.<name>`` so that every call adds its wall-clock seconds to the yielded dict."""
    spent = {name: 0.0 for name in names}
    originals = {name: getattr(suite, name) for name in names}

    def timed(name):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    for name in names:
        setattr(suite, name, timed(name))
    try:
        yield spent
    finally:
        for name, original in originals.items():
            setattr(suite, name, original)


def time_evaluate_tofu(model, formatter, task, args) -> list[dict[str, float]]:
    runs = []
    for _ in range(args.eval_repeats):
        with time_inside_suite(("score_pairs", "generate_answers")) as spent:
            start = time.perf_counter()
            suite.evaluate_tofu(model, formatter, task, batch_size=args.batch_size,
                                max_new_tokens=args.max_new_tokens, progress=False)
            total = time.perf_counter() - start
        runs.append({"total": total, "score_pairs": spent["score_pairs"],
                     "generate_answers": spent["generate_answers"],
                     "planning_and_metrics": total - spent["score_pairs"] - spent["generate_answers"]})
    return runs


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    task = load_task(args)
    model, tokenizer = load_model(args.model, task, args.seed)
    model.eval()
    formatter = QAFormatter(tokenizer)

    plan = suite.plan_tofu(task)
    pairs, questions = plan.pairs, plan.questions
    batches = bare_batches(formatter, pairs, args.batch_size)
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded_tokens = sum(b["input_ids"].numel() for b in batches)
    n_unique = sum(len(b["input_ids"]) for b in batches)

    # warm-up: every batch shape once for the bare pass, and a full scoring pass
    bare_forward(model, batches)
    score_pairs(model, formatter, pairs, batch_size=args.batch_size)
    score_pairs(model, formatter, pairs, batch_size=args.batch_size, share_prompts=False)
    times = interleaved_medians({
        "bare forward pass": lambda: bare_forward(model, batches),
        "score_pairs, whole sequences": lambda: score_pairs(model, formatter, pairs, batch_size=args.batch_size,
                                                            share_prompts=False),
        "score_pairs, shared prompts": lambda: score_pairs(model, formatter, pairs, batch_size=args.batch_size),
    }, args.repeats)
    bare, scoring = median(times["bare forward pass"]), median(times["score_pairs, whole sequences"])
    shared = median(times["score_pairs, shared prompts"])
    evaluation = time_evaluate_tofu(model, formatter, task, args)

    print(f"model: {describe_model(args.model, model)}")
    print(f"task: {task.name}; threads: torch.set_num_threads({args.threads}) -> torch.get_num_threads() = {threads}")
    print(f"batch size {args.batch_size}; pairs planned {len(pairs)}, distinct {n_unique} in {len(batches)} batches; "
          f"tokens {real_tokens} real, {padded_tokens} with padding")
    print()
    print(table(["teacher-forced pass", "median s", f"min-max of {args.repeats}", "real tokens/s"], [
        [name, f"{median(runs):.3f}", spread(runs), f"{real_tokens / median(runs):,.0f}"]
        for name, runs in times.items()
    ]))
    print(f"\nratio bare/scoring = {bare / scoring:.3f}  "
          "(teacher-forced scoring throughput as a fraction of a bare forward pass over the same tokens)")
    print(f"ratio bare/shared-prompt scoring = {bare / shared:.3f}  (what the suite runs, against that bare pass)")
    parts = ("total", "score_pairs", "generate_answers", "planning_and_metrics")
    medians = {part: median([run[part] for run in evaluation]) for part in parts}
    print(f"\nevaluate_tofu, all metrics, {len(dict.fromkeys(questions))} questions generated greedily "
          f"(max_new_tokens {args.max_new_tokens}):")
    print(table(["part", "median s", f"min-max of {args.eval_repeats}", "share of total"], [
        [f"evaluate_tofu {part}" if part == "total" else f"  {part}", f"{medians[part]:.3f}",
         spread([run[part] for run in evaluation]), f"{medians[part] / medians['total']:.1%}"]
        for part in parts
    ]))

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": describe_model(args.model, model), "task": task.name, "threads": threads,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "pairs_planned": len(pairs), "pairs_distinct": n_unique, "real_tokens": real_tokens,
        "padded_tokens": padded_tokens, "questions": len(dict.fromkeys(questions)),
        "bare_forward_s": times["bare forward pass"], "score_pairs_s": times["score_pairs, whole sequences"],
        "score_pairs_shared_s": times["score_pairs, shared prompts"],
        "ratio_bare_over_scoring": bare / scoring, "ratio_bare_over_shared": bare / shared, "evaluate_tofu_s": evaluation,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
