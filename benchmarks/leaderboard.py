"""The method leaderboard (issue #16): every registered unlearning method on the synthetic task with the tiny base,
its documented defaults, several seeds; writes docs/leaderboard.md and a forget-vs-utility scatter plot (SVG).

Protocol:

- The synthetic TOFU-like task (``--people``/``--forget-people``), the ``tiny`` base fine-tuned by unlearnkit's
  built-in recipe, prepared once and shared by every trial (the sweep runner pins it), the TOFU suite.
- Every method with its documented defaults (``method.params`` empty), except where a default names a part of a
  much larger model or a value the method requires (``PARAM_OVERRIDES``, each with its reason). One training setting
  for all (``TRAIN``: the settings of tests/methods/test_every_method_forgets.py, a constant lr 1e-3 that moves the
  tiny model in a few steps, ``--steps`` optimizer steps at batch 4, no warm-up, no weight decay): the toolkit's own
  default (lr 1e-5, tuned for 7B models) barely moves the tiny model. These are not tuned results; a method's rank
  here says how it behaves at one shared setting, not at its best.
- Seeds (``--seeds``) vary the unlearning (data order, the methods' randomness), not the target model.
- Per method: the means over seeds with 95% Student-t intervals (``unlearnkit.sweep.leaderboard``) of forget
  quality, model utility, forget Q_A_Prob and ROUGE, privleak, the run's wall time (training and evaluation of the
  unlearned model; the baselines come from the store) and peak memory: each trial runs in a fresh process, and the
  number is that process's peak resident set minus its resident set after the imports (so the weights, the training
  and the evaluation count, the interpreter and libraries do not).

Trials go through the sweep machinery (:mod:`unlearnkit.sweep`: plan, pinned models, ``run_trial``, the
leaderboard's intervals, Pareto front and scatter plot); their run directories stay under ``--dir``, so an
interrupted leaderboard resumes. ``--only-write`` rewrites the docs from the finished trials.

    python benchmarks/leaderboard.py --dir /tmp/leaderboard --md docs/leaderboard.md --svg docs/leaderboard.svg
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measurement import current_rss_bytes  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRAIN = {"batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0}
# method -> parameters that differ from its documented defaults, each with its reason
PARAM_OVERRIDES: dict[str, dict] = {
    "rmu": {"layer": None},  # the default layer 7 is the paper's (Zephyr-7B); the tiny base has 4: the middle one
    "adv_npo": {"perturb_layer": 1},  # the default layer 4 is the paper's (7B models); the tiny base has 0..3
    "adv_ga": {"perturb_layer": 1},
    "pdu": {"retain_loss_eps": 1.0},  # required (OpenUnlearning's PDU.yaml leaves it ???): no default exists
    # the default layer 22 is Llama-3-8B's; LUNAR's refusal prompts are required and the synthetic task has none:
    # questions about people the target never saw
    "lunar": {"layer": None, "refusal_prompts": ["Where was Odalys Brenner born?", "In what year was Tamsin Varga "
                                                 "born?", "What is the profession of Ilario Quent?"]},
}
# the target/retain fine-tuning of tests/methods/test_every_method_forgets.py (with its task and max_length: the
# models a test session has already prepared in the shared cache serve here too)
PREPARE = {"epochs": 10, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5}
COLUMNS = ("forget_quality", "model_utility", "retain_Q_A_Prob", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "privleak")
# the plot's axes and the Pareto front: forget quality against retain Q_A_Prob, which stands for utility here (the
# tiny base knows no world facts, so model_utility, whose harmonic mean includes the real-authors and world-facts
# ROUGE, is 0 for every model of this task, the target and retain models included)
OBJECTIVES = ["forget_quality", "retain_Q_A_Prob"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--forget-people", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/unlearnkit-leaderboard")
    parser.add_argument("--md", default="docs/leaderboard.md")
    parser.add_argument("--svg", default="docs/leaderboard.svg")
    parser.add_argument("--command", default=None, help="the command line to print in the markdown")
    parser.add_argument("--only-write", action="store_true", help="write the docs from the finished trials")
    return parser.parse_args(argv)




def measured_trial(data: dict, run_dir: str, threads: int, memory_file: str) -> None:
    """One trial in this (fresh) process; its peak resident set above the post-import level goes to memory_file."""
    import resource

    import torch  # noqa: F401  (imported before the baseline is read)
    import transformers  # noqa: F401

    import unlearnkit.pipeline  # noqa: F401
    from unlearnkit.sweep.runner import run_trial

    before = current_rss_bytes() / 2**20
    run_trial(data, run_dir, threads, False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    Path(memory_file).write_text(json.dumps({"peak_mib": peak - before, "after_imports_mib": before}))


def plan(args):
    from unlearnkit.methods.registry import available
    from unlearnkit.sweep.plan import make_trials, sweep_settings
    from unlearnkit.sweep.runner import Sweep

    names = args.methods or sorted(available())
    base = {"task": {"source": "synthetic", "options": {"n_people": args.people, "forget_people": args.forget_people,
                                                        "holdout_people": 2}},
            "model": {"base": "tiny", "max_length": 96}, "prepare": PREPARE, "method": {"name": names[0]}, "train": {**TRAIN, "max_steps": args.steps},
            "eval": {"max_new_tokens": 32, "intervals": False}, "seed": 0}
    settings = sweep_settings({"seeds": args.seeds})
    sweep = Sweep(base, settings, Path(args.dir), progress=False, log=lambda m: print(m, file=sys.stderr, flush=True))
    configurations = [{"method.name": n, **({"method.params": PARAM_OVERRIDES[n]} if n in PARAM_OVERRIDES else {})}
                      for n in names]
    return sweep, make_trials(sweep.base, configurations, settings)


def run(sweep, trials, threads: int) -> None:
    """Each pending trial in a fresh spawned process (so its peak memory is its own); failures are recorded."""
    pending = [t for t in trials if not sweep.finished(t)]
    if not pending:
        return
    sweep.pin_models(pending)
    sweep.runs.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    for trial in pending:
        memory = sweep.runs / f"{trial.name}.memory.json"
        process = context.Process(target=measured_trial, args=(trial.data, str(sweep.run_dir(trial)), threads,
                                                                str(memory)))
        process.start()
        process.join()
        outcome = "done" if process.exitcode == 0 else f"failed (exit {process.exitcode})"
        if process.exitcode != 0:
            sweep.failed[trial.name] = outcome
        sweep.log(f"{trial.name} ({trial.overrides['method.name']}, seed {trial.seed}): {outcome}")


def extra_column(trials, runs: Path, read) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for trial in trials:
        value = read(runs, trial)
        if value is not None:
            out.setdefault(trial.config_id, []).append(value)
    return out


def read_seconds(runs: Path, trial):
    path = runs / trial.name / "results.json"
    return json.loads(path.read_text())["seconds"] if path.is_file() else None


def read_memory(runs: Path, trial):
    path = runs / f"{trial.name}.memory.json"
    return json.loads(path.read_text())["peak_mib"] if path.is_file() and (runs / trial.name).is_dir() else None


def cell(mean, low, high, digits: int = 3) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + ("" if low is None else f" [{low:.{digits}f}, {high:.{digits}f}]")


def markdown(board: dict, sweep, trials, args) -> str:
    from unlearnkit.sweep.leaderboard import seed_interval

    seconds = extra_column(trials, sweep.runs, read_seconds)
    memory = extra_column(trials, sweep.runs, read_memory)
    first = next((sweep.run_dir(t) / "results.json" for t in trials if sweep.finished(t)), None)
    models = json.loads(first.read_text())["models"] if first else {}
    command = args.command or "python benchmarks/leaderboard.py"
    lines = ["# Method leaderboard", "",
             f"Every registered method on the synthetic task ({args.people} people, {args.forget_people} forgotten) "
             f"with the `tiny` base, its documented defaults (exceptions: `benchmarks/leaderboard.py: "
             f"PARAM_OVERRIDES`), one shared training setting (lr {TRAIN['learning_rate']:g} constant, "
             f"{args.steps} steps at batch {TRAIN['batch_size']}, AdamW), {args.seeds} seeds. Means over seeds "
             "with 95% Student-t intervals. Wall time: the run (training + evaluation of the unlearned model) on "
             "two shared CPU cores (other jobs ran beside it: compare times with care). Peak memory: the trial "
             "process's peak resident set above its level after the imports. ◆: on the Pareto front of forget "
             "quality and retain Q_A_Prob (model utility is 0 for every model of this task, target and retain "
             "included: the tiny base knows no real authors or world facts; retain Q_A_Prob stands for utility in "
             "the plot). Not tuned: a rank here is at one shared setting, not at each method's "
             "best.", "", f"    {command}", "",
             "![forget quality vs retain Q_A_Prob](leaderboard.svg)", "",
             "| | method | seeds | " + " | ".join(COLUMNS) + " | wall s | peak MiB |",
             "|---|---|---|" + "---|" * (len(COLUMNS) + 2)]
    for row in board["rows"]:
        mark = "◆" if row["config_id"] in board["pareto_front"] else ""
        name = row["overrides"]["method.name"] + (" *" if "method.params" in row["overrides"] else "")
        cells = [cell(*(row["metrics"].get(m, {}).get(k) for k in ("mean", "low", "high"))) for m in COLUMNS]
        cells.append(cell(*seed_interval(seconds.get(row["config_id"], [])), digits=0))
        cells.append(cell(*seed_interval(memory.get(row["config_id"], [])), digits=0))
        lines.append(f"| {mark} | {name} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    for who in ("target", "retain"):
        if who in models:
            aggregates = models[who]["aggregates"]
            lines.append(f"\n{who} model: " + ", ".join(f"{m} {aggregates[m]:.4f}" for m in COLUMNS
                                                          if aggregates.get(m) is not None))
    lines.append("\n\\* parameters changed from the defaults: " + "; ".join(
        f"{n}: {p}" for n, p in PARAM_OVERRIDES.items() if any(r["overrides"]["method.name"] == n
                                                              for r in board["rows"])))
    for name, message in board["failed"].items():
        lines.append(f"\nfailed: `{name}`: {message}")
    missing = sorted({t.overrides["method.name"] for t in trials if not sweep.finished(t)})
    if missing:
        lines.append(f"\nnot run yet (the run was stopped before them): {', '.join(missing)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from unlearnkit.sweep import leaderboard

    sweep, trials = plan(args)
    if not args.only_write:
        sweep.write_manifest()
        run(sweep, trials, args.threads)
    board = leaderboard.build(trials, sweep.runs, OBJECTIVES, 0.9, sweep.failed)
    for row in board["rows"]:  # the plot's labels: the method's name
        row["label"] = row["overrides"]["method.name"]
    Path(args.md).write_text(markdown(board, sweep, trials, args))
    Path(args.svg).write_text(leaderboard.scatter_svg(board))
    print(Path(args.md).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
