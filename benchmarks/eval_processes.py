"""evaluate_tofu in two processes (``accelerate launch``, CPU, gloo) against one process, with explicit thread counts.

What is measured (CPU, float32):

1. In this process: ``evaluate_tofu`` with ``torch.set_num_threads(1)`` and with ``torch.set_num_threads(2)``
   (one untimed warm-up run first, then ``--repeats`` runs of each, interleaved; medians).
2. The same evaluation in two processes: ``accelerate launch --multi_gpu --num_processes 2`` (CPU: accelerate then
   starts a gloo process group) runs this script in worker mode; each worker sets one thread, initialises
   ``accelerate.PartialState(cpu=True)``, loads the same task and model, runs ``evaluate_tofu`` once untimed (as
   the one-process side has its warm-up) (timed apart) and then ``--repeats`` timed times (``wait_for_everyone`` before each),
   and rank 0 writes every rank's times and the result to a JSON file; the workers end with
   ``torch.distributed.destroy_process_group()``. ``score_pairs`` and ``generate_answers`` deal whole batches to the
   processes and gather the results on every process (``unlearnkit.evaluation.scoring.distributed``).

Printed: the wall time of the launch (process start-up, imports, model set-up, warm-up and timed runs included),
the time inside the workers (median over the timed runs of the slowest rank), and the ratios
1-process / 2-process for 1 × 1 thread and 1 × 2 threads. Check: the 2-process result (aggregates, per-example
values, generations) must equal the 1-process × 1-thread result exactly (the script exits with status 1
otherwise); whether 1 × 2 threads gives the same values is printed, not required (intra-op threads may change
the order of float sums).

The model is the ``tiny`` base by default (random weights: speed only), rebuilt in every process from the same
seed; the model fingerprint of both sides is compared as well. Nothing is written outside a temporary folder
unless ``--json PATH`` is given. Example::

    python benchmarks/eval_processes.py --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from measurement import table  # noqa: E402
from subjects import add_subject_options, describe_model, load_model, load_task, positive_int  # noqa: E402
from unlearnkit.data.formatting import QAFormatter  # noqa: E402
from unlearnkit.evaluation.scoring.store import model_fingerprint  # noqa: E402
from unlearnkit.evaluation.suites.tofu import evaluate_tofu  # noqa: E402

# the TOFU suite's own metric set plus Min-K% (the suite's other MIA statistics are left out)
METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio", "retain_Q_A_Prob", "retain_Q_A_ROUGE",
           "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio", "wf_Q_A_Prob_normalised",
           "wf_Q_A_ROUGE", "wf_Truth_Ratio", "extraction_strength", "exact_memorization", "mia_min_k", "model_utility")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_subject_options(parser, default_model="tiny")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="evaluation batch size")
    parser.add_argument("--max-new-tokens", type=positive_int, default=200, help="greedy generation bound (TOFU: 200)")
    parser.add_argument("--repeats", type=positive_int, default=1, help="timed runs of each configuration")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", metavar="OUT", default=None, help=argparse.SUPPRESS)  # set by the launch
    return parser.parse_args(argv)


def subject(args: argparse.Namespace):
    task = load_task(args)
    model, tokenizer = load_model(args.model, task, args.seed)
    model.eval()
    return model, QAFormatter(tokenizer), task


def evaluate(model, formatter, task, args):
    return evaluate_tofu(model, formatter, task, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                         metrics=set(METRICS), progress=False)


def worker(args: argparse.Namespace) -> None:
    """One process of the launch: one thread, the same evaluation; rank 0 writes times and result to ``--worker``."""
    from accelerate import PartialState

    started = time.time()
    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    model, formatter, task = subject(args)
    start = time.perf_counter()
    evaluate(model, formatter, task, args)  # warm-up, as the one-process side (its time is taken off the launch's)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        state.wait_for_everyone()
        start = time.perf_counter()
        result = evaluate(model, formatter, task, args)
        times.append(time.perf_counter() - start)
    ready = {"rank": state.process_index, "threads": torch.get_num_threads(), "started_unix": started,
             "warmup_s": warmup, "eval_s": times, "fingerprint": model_fingerprint(model, formatter)}
    everyone = [None] * state.num_processes
    torch.distributed.all_gather_object(everyone, ready)
    if state.is_main_process:
        Path(args.worker).write_text(json.dumps({"ranks": everyone, "result": result.to_dict()}))
    state.wait_for_everyone()
    torch.distributed.destroy_process_group()


def launch(argv: list[str], out: Path) -> float:
    """Run this script under ``accelerate launch`` with two processes; return the launch's wall-clock seconds."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(Path(__file__).resolve()), *argv, "--worker", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the 2-process launch failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def without_json(argv: list[str]) -> list[str]:
    """The command-line arguments less ``--json PATH`` / ``--json=PATH`` (the workers write no JSON of their own)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            out.append(arg)
    return out


def same(a: dict, b: dict) -> bool:
    """Exact equality of two EvalResult dicts after a JSON round trip (how the worker's result comes back)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def max_difference(a: dict, b: dict) -> float:
    """Max |a − b| over the aggregates that are numbers on both sides."""
    diffs = [abs(a[k] - b[k]) for k in a if isinstance(a.get(k), float) and isinstance(b.get(k), float)]
    return max(diffs, default=0.0)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    model, formatter, task = subject(args)
    forwarded = without_json(argv)

    times: dict[str, list[float]] = {"1 process x 1 thread": [], "1 process x 2 threads": []}
    results = {}
    torch.set_num_threads(1)
    evaluate(model, formatter, task, args)  # warm-up
    for _ in range(args.repeats):
        for name, threads in (("1 process x 1 thread", 1), ("1 process x 2 threads", 2)):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            results[name] = evaluate(model, formatter, task, args).to_dict()
            times[name].append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "workers.json"
        launch_started = time.time()
        wall = launch(forwarded, out)
        workers = json.loads(out.read_text())
    startup = max(r["started_unix"] for r in workers["ranks"]) - launch_started
    inside = [max(r["eval_s"][i] for r in workers["ranks"]) for i in range(args.repeats)]
    single_1 = statistics.median(times["1 process x 1 thread"])
    single_2 = statistics.median(times["1 process x 2 threads"])
    two = statistics.median(inside)
    launch_s = wall - max(r["warmup_s"] for r in workers["ranks"])  # the launch without the untimed warm-up run

    identical = same(results["1 process x 1 thread"], workers["result"])
    threads_identical = same(results["1 process x 1 thread"], results["1 process x 2 threads"])
    same_model = {r["fingerprint"] for r in workers["ranks"]} == {model_fingerprint(model, formatter)}
    print(f"model: {describe_model(args.model, model)}; task: {task.name}; batch size {args.batch_size}; "
          f"max_new_tokens {args.max_new_tokens}; {len(METRICS)} metrics; {os.cpu_count()} CPUs")
    print(f"workers: threads {[r['threads'] for r in workers['ranks']]}, the launch reached the scripts "
          f"{startup:.1f} s after it began (interpreter and accelerate start-up)")
    print()
    print(table(["configuration", "median s", f"runs ({args.repeats})"], [
        *[[name, f"{statistics.median(runs):.3f}", " ".join(f"{t:.2f}" for t in runs)] for name, runs in times.items()],
        ["2 processes x 1 thread, inside the workers", f"{two:.3f}", " ".join(f"{t:.2f}" for t in inside)],
        ["2 processes x 1 thread, whole launch", f"{launch_s:.3f}", f"start-up, model set-up and runs "
         f"(the warm-up run taken off: {wall:.1f} s with it)"],
    ]))
    print()
    print(table(["ratio 1-process / 2-process", "inside the workers", "whole launch"], [
        ["1 process x 1 thread", f"{single_1 / two:.2f}", f"{single_1 * args.repeats / launch_s:.2f}"],
        ["1 process x 2 threads", f"{single_2 / two:.2f}", f"{single_2 * args.repeats / launch_s:.2f}"],
    ]))
    print("(whole launch: the 1-process time of the timed runs over the launch's wall time less the warm-up run; the "
          "1-process side's start-up and model set-up are not counted)")
    print(f"\n2 processes == 1 process x 1 thread, every aggregate, per-example value and generation: {identical} "
          f"(same model weights: {same_model})")
    print(f"1 process x 2 threads == 1 process x 1 thread: {threads_identical} (max |difference| of an aggregate "
          f"{max_difference(results['1 process x 1 thread']['aggregates'], results['1 process x 2 threads']['aggregates']):.1e})")

    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "model": describe_model(args.model, model),
        "task": task.name, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "one_process_s": times, "two_processes_inside_s": inside, "two_processes_launch_wall_s": wall,
        "two_processes_launch_without_warmup_s": launch_s,
        "launch_startup_s": startup, "identical": identical, "threads_identical": threads_identical,
        "ranks": workers["ranks"],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if not (identical and same_model):
        print("FAILED: the 2-process evaluation differs from the 1-process one", file=sys.stderr)
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
