"""The coreset effect on the synthetic task: NPO and RMU unlearning on 5, 10, 25 and 100 % of the forget set.

"LLM Unlearning Reveals a Stronger-Than-Expected Coreset Effect" (Pal et al., 2025; research/methods.md §16) reports
that unlearning on a small random subset of the forget set (5 % on WMDP and MUSE) forgets about as much of the WHOLE
set as unlearning on all of it, given as many training steps. This script checks the claim with unlearnkit's runs:
``task.forget_subset: {fraction, strategy: random, seed}`` trains on the subset and every run is evaluated on the
whole forget set.

Protocol (each an option):

- The synthetic TOFU-like task (``--people``/``--forget-people``), the ``tiny`` base fine-tuned by unlearnkit's
  built-in recipe (cached), evaluated with the TOFU suite (the target and retain models once, from the cache).
- Every run trains the same number of optimizer steps: ``--epochs`` passes over the FULL forget set at
  ``--batch-size`` (``train.max_steps``), so a 5 % subset is cycled about 20 times as often ("longer training as
  needed", the paper's protocol). ``--budget epochs`` instead gives every run ``--epochs`` passes over its own subset.
- 3 seeds (``--seeds``) draw the subsets. The run's own seed (``--run-seed``: the target and retain models'
  fine-tuning, the data order, the method's randomness) is the same for every run, so that the runs differ only in
  the subset; the 100 % run, which has no subset to draw, is therefore run once.
- Reported per method and fraction: the mean and standard deviation over seeds of forget Q_A_Prob, forget ROUGE,
  forget quality and model utility of the unlearned model on the whole forget set.
- Verdict per method and fraction: the subset "matches" the full set when its mean drop in forget Q_A_Prob
  (target minus unlearned) is at least ``--match`` (0.8) of the full set's mean drop and its model utility is no
  lower than the full set's minus ``--utility-slack`` (0.02). The claim holds for a method when the 5 % and 10 %
  subsets match; there is no verdict when unlearning on the whole set lowered forget Q_A_Prob by less than
  ``--min-full-drop`` (0.1): then the method did not unlearn at these settings and nothing is compared.

Examples::

    python benchmarks/coreset.py --threads 2 --json coreset.json          # about 20-40 min on two shared cores
    python benchmarks/coreset.py --methods npo --fractions 0.1 1.0 --seeds 0   # a quick look
    python benchmarks/coreset.py --table-from coreset.json                    # the table of a (partial) run

Run directories go to a temporary folder (``--keep DIR`` keeps them); the model cache is unlearnkit's
(``$UNLEARNKIT_CACHE``, else ``~/.cache/unlearnkit``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_quality", "model_utility")
# per method: parameters and learning rate for the tiny base (rmu's default layer 7 is the paper's 7B model's)
METHODS = {"npo": ({}, 5e-4), "rmu": ({"layer": None}, 1e-3)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--run-seed", type=int, default=0, help="the runs' seed (models, data order, method)")
    parser.add_argument("--people", type=int, default=40, help="people of the synthetic task")
    parser.add_argument("--forget-people", type=int, default=4, help="people to forget")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the full forget set (the step budget)")
    parser.add_argument("--budget", choices=("steps", "epochs"), default="steps",
                        help="steps: every run trains as many steps as --epochs over the full set; epochs: --epochs "
                             "passes over its own subset")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="one learning rate for every method (default: each method's in METHODS)")
    parser.add_argument("--match", type=float, default=0.8, help="share of the full set's forgetting a subset needs")
    parser.add_argument("--min-full-drop", type=float, default=0.1,
                        help="below this drop in forget Q_A_Prob, unlearning on 100 %% did not work: no verdict")
    parser.add_argument("--utility-slack", type=float, default=0.02, help="model-utility loss a subset may have")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", metavar="DIR", default=None, help="keep the run directories here")
    parser.add_argument("--json", metavar="PATH", default=None, help="write every number here (after every run)")
    parser.add_argument("--table-from", metavar="PATH", default=None,
                        help="print the table and verdict of the runs in a --json file (a finished or interrupted "
                             "benchmark) and exit")
    return parser.parse_args(argv)


def config(args, method: str, fraction: float, seed: int, n_forget: int, output_dir: Path) -> dict:
    params, lr = METHODS[method]
    lr = args.learning_rate or lr
    full_steps = args.epochs * -(-n_forget // args.batch_size)
    train = {"batch_size": args.batch_size, "learning_rate": lr, "warmup_steps": 0, "schedule": "constant"}
    train.update({"max_steps": full_steps} if args.budget == "steps" else {"epochs": args.epochs})
    task = {"source": "synthetic", "options": {"n_people": args.people, "forget_people": args.forget_people}}
    if fraction < 1:
        task["forget_subset"] = {"fraction": fraction, "strategy": "random", "seed": seed}
    return {"task": task, "model": {"base": "tiny"}, "method": {"name": method, "params": params}, "train": train,
            "eval": {"max_new_tokens": 32, "intervals": False}, "seed": args.run_seed, "output_dir": str(output_dir)}


def summarise(rows: list[dict], args) -> tuple[str, dict]:
    """A markdown table (mean ± sd over seeds) and the verdict per method."""
    lines = ["| method | fraction | trained on | " + " | ".join(METRICS) + " | matches 100 % |",
             "|---|---|---|" + "---|" * len(METRICS) + "---|"]
    verdict = {}
    for method in args.methods:
        by_fraction = {f: [r for r in rows if r["method"] == method and r["fraction"] == f] for f in args.fractions}
        full = by_fraction.get(1.0) or []
        target = rows[0]["target"] if rows else {}
        full_drop = statistics.mean(target["forget_Q_A_Prob"] - r["unlearned"]["forget_Q_A_Prob"] for r in full) \
            if full else None
        full_utility = statistics.mean(r["unlearned"]["model_utility"] for r in full) if full else None
        verdict[method] = {}
        for fraction, runs in by_fraction.items():
            if not runs:
                continue
            cells = []
            for metric in METRICS:
                values = [r["unlearned"][metric] for r in runs if r["unlearned"][metric] is not None]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}" if values else "—")
            drop = statistics.mean(target["forget_Q_A_Prob"] - r["unlearned"]["forget_Q_A_Prob"] for r in runs)
            utility = statistics.mean(r["unlearned"]["model_utility"] for r in runs)
            matches = None
            if full_drop is not None and fraction < 1:
                matches = drop >= args.match * full_drop and utility >= full_utility - args.utility_slack
            verdict[method][fraction] = {"forget_prob_drop": drop, "model_utility": utility, "matches_full": matches}
            shown = "—" if matches is None else ("yes" if matches else "no")
            lines.append(f"| {method} | {fraction:g} | {runs[0]['trained_on']} of {runs[0]['forget_items']} | "
                         + " | ".join(cells) + f" | {shown} |")
        small = [verdict[method][f]["matches_full"] for f in (0.05, 0.1) if f in verdict[method]]
        verdict[method]["claim_holds"] = None if full_drop is None or full_drop < args.min_full_drop or not small \
            else all(small)
    if rows:
        t = rows[0]["target"]
        lines.append("")
        lines.append("target: " + ", ".join(f"{m} {t[m]:.4f}" for m in METRICS if t.get(m) is not None))
        r = rows[0].get("retain") or {}
        if r:
            lines.append("retain: " + ", ".join(f"{m} {r[m]:.4f}" for m in METRICS if r.get(m) is not None))
    for method in args.methods:
        holds = verdict[method]["claim_holds"]
        said = {True: "holds", False: "does not hold", None: "no verdict: unlearning on 100 % lowered forget "
                f"Q_A_Prob by less than {args.min_full_drop} (or a fraction is missing)"}[holds]
        lines.append(f"{method}: coreset claim (5 % and 10 % match 100 %): {said}")
    return "\n".join(lines), verdict


def write_json(path: Path, data: dict) -> None:
    """Written to a temporary name, then renamed: the file is never half-written."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from:
        runs = json.loads(Path(args.table_from).read_text())["runs"]
        print(summarise([r for r in runs if r["method"] in args.methods and r["fraction"] in args.fractions], args)[0])
        return 0
    import torch

    torch.set_num_threads(args.threads)
    import unlearnkit
    from unlearnkit.data.sources import load_task

    n_forget = len(load_task("synthetic", n_people=args.people, forget_people=args.forget_people).forget)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="coreset-"))
    rows = []
    plan = [(m, f, s) for s in args.seeds for m in args.methods for f in args.fractions  # a seed at a time
            if f < 1 or s == args.seeds[0]]  # the whole set once: the seed draws only subsets
    for method, fraction, seed in plan:
        out = root / f"{method}-{fraction:g}-{seed}"
        started = time.time()
        results = unlearnkit.unlearn(config(args, method, fraction, seed, n_forget, out), progress=False).results
        models = results["models"]
        subset = results["training"]["forget_subset"]
        rows.append({
            "method": method, "fraction": fraction, "seed": seed, "steps": results["training"]["steps"],
            "forget_items": n_forget, "trained_on": subset["size"] if subset else n_forget,
            "seconds": round(time.time() - started, 1),
            **{who: {m: models[who]["aggregates"].get(m) for m in METRICS} for who in models}})
        print(f"{method} {fraction:g} seed {seed}: forget_Q_A_Prob "
              f"{rows[-1]['unlearned']['forget_Q_A_Prob']:.4f} ({rows[-1]['seconds']} s)", file=sys.stderr)
        if args.json:  # after every run, so that an interrupted benchmark keeps what it measured
            write_json(Path(args.json), {"args": vars(args), "runs": rows})
    table, verdict = summarise(rows, args)
    print(table)
    if args.json:
        write_json(Path(args.json), {"args": vars(args), "runs": rows, "verdict": verdict})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
