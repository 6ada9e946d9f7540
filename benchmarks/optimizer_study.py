"""The optimizer as its own axis (issue #15, research/methods.md §2, §13, §20): GradDiff and NPO unlearned with
AdamW, signSGD, Lion, zeroth-order (``zo``), the FO-ZO hybrid (``zo_hybrid``), evolution strategies (``es``) and SAM,
then attacked by relearning and quantization. The claim checked ("Downgrade to Upgrade", arXiv:2510.00761; the
SAM/NPO paper of §2): a simpler optimizer (sign, zeroth-order, hybrid) or a flatter minimum (SAM) makes unlearning
harder to undo.

Protocol (each an option):

- The synthetic TOFU-like task (``--people``/``--forget-people``), the ``tiny`` base fine-tuned by unlearnkit's
  built-in recipe (prepared once by the sweep runner and shared by every trial), TOFU suite.
- Every trial trains ``--steps`` optimizer steps at batch ``--batch-size`` (constant learning rate, no warm-up, no
  weight decay; the methods' documented defaults). ``zo_hybrid`` alternates ``steps/4`` AdamW and ``steps/4`` AdaZO
  steps, ending on a ZO phase (the paper's 1:1 ratio; it reports the result insensitive to the phase length).
- **Tuning.** Each (method, optimizer) runs every learning rate of its grid (``GRIDS``) with the first seed. The
  chosen rate is the one with the highest forget quality among those whose model utility stays ≥ ``--utility-floor``
  (0.8) × the target model's (if none does, the highest forget quality), ties (forget quality is a KS p-value over
  few items and takes few values) broken by the lower forget Q_A_Prob: every optimizer is pushed toward the same
  forget-quality band, and the table says which ones reach ``--band``.
- **Seeds.** The chosen configuration is run with every seed (``--seeds``); seeds vary the unlearning (data order,
  the optimizers' draws), not the target model.
- **Attacks** (``unlearnkit attack``'s code, on every chosen run): relearning on ``--relearn-examples`` forget
  examples for ``--relearn-steps`` steps at lr ``--relearn-lr`` (the Microscope default 2e-5 moves the tiny model
  too little to measure), and weight-only int8 / fp4 quantization. Reported: the recovered fraction of forget Q_A_Prob
  (after − unlearned)/(target − unlearned) (research/metrics.md §6) after relearning and under each quantization.
- Means with 95% Student-t intervals over seeds (``unlearnkit.sweep.leaderboard.seed_interval``), wall time of
  the run (training + evaluation) and optimizer steps.

Runs go through the sweep runner (:mod:`unlearnkit.sweep`): trial directories under ``--dir``, so an interrupted
study resumes where it stopped. ``--table-from`` prints the table (and writes the plot) of a finished or partial
study from its JSON.

    python benchmarks/optimizer_study.py --dir /tmp/optstudy --json /tmp/optstudy/study.json --plot docs/optimizer_study.svg
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# in the order they run: the baseline, then the papers' candidates (an interrupted study has the main comparisons)
OPTIMIZERS = ("adamw", "zo_hybrid", "sam", "es", "signsgd", "zo", "lion")
# learning-rate grids for the tiny base, per optimizer (two rates each: the machine's budget). Sign-type and adaptive
# steps move each weight by about lr per step (GradDiff with AdamW at 3e-4 for 32 steps already destroys the tiny
# model: every forget and retain probability 0); zo's sphere estimate d·(u·g)·u moves each weight by about lr·‖g‖
# (d ≈ 2M); es by about lr·σ·√2 per step (σ = 1e-3; 0.1 and 0.3 left the model where it was: four rates)
GRIDS = {
    "adamw": [3e-5, 1e-4],
    "signsgd": [3e-5, 1e-4],
    "lion": [3e-5, 1e-4],
    "zo": [1e-4, 1e-3],
    "zo_hybrid": [3e-5, 1e-4],
    "es": [0.1, 0.3, 1.0, 3.0],
    "sam": [3e-5, 1e-4],
}
METRICS = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob")
SCHEMES = ("int8", "fp4")
# the target/retain fine-tuning of tests/methods/test_every_method_forgets.py (with its task and max_length: the
# models a test session has already prepared in the shared cache serve here too)
PREPARE = {"epochs": 10, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["graddiff", "npo"])
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--forget-people", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--utility-floor", type=float, default=0.8)
    parser.add_argument("--band", type=float, default=0.1, help="forget quality a tuned run should reach")
    parser.add_argument("--relearn-examples", type=int, default=8)
    parser.add_argument("--relearn-steps", type=int, default=20)
    parser.add_argument("--relearn-lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/optimizer-study", help="the sweep directory (trial runs)")
    parser.add_argument("--json", default=None, help="write every number here")
    parser.add_argument("--plot", default=None, help="write the plot here (.svg)")
    parser.add_argument("--collect-only", action="store_true",
                        help="run nothing: collect the finished (and attacked) trials of --dir into --json")
    parser.add_argument("--table-from", nargs="+", default=None,
                        help="print the table of --json files (e.g. one per method, run in parallel) and exit")
    return parser.parse_args(argv)


def base_config(args) -> dict:
    return {"task": {"source": "synthetic", "options": {"n_people": args.people, "forget_people": args.forget_people,
                                                        "holdout_people": 2}},
            "model": {"base": "tiny", "max_length": 96}, "prepare": PREPARE, "method": {"name": "npo"},
            "train": {"max_steps": args.steps, "batch_size": args.batch_size, "warmup_steps": 0,
                      "schedule": "constant", "weight_decay": 0.0},
            "eval": {"max_new_tokens": 32, "intervals": False}, "seed": 0}


def optimizer_block(name: str, steps: int) -> dict:
    if name == "zo_hybrid":
        phase = max(1, steps // 4)
        return {"name": name, "fo_steps": phase, "zo_steps": phase}
    return {"name": name}


def overrides(method: str, optimizer: str, lr: float, steps: int) -> dict:
    return {"method.name": method, "train.optimizer": optimizer_block(optimizer, steps), "train.learning_rate": lr}


def read_run(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    models = results["models"]
    return {"unlearned": {m: models["unlearned"]["aggregates"].get(m) for m in METRICS},
            "target": {m: models["target"]["aggregates"].get(m) for m in METRICS},
            "retain": {m: models.get("retain", {}).get("aggregates", {}).get(m) for m in METRICS},
            "steps": results["training"]["steps"], "seconds": results["seconds"],
            "robustness": results.get("robustness")}


def choose(rows: list[dict], floor: float) -> dict:
    """The tuning rule of the module docstring."""
    ok = [r for r in rows if (r["unlearned"]["model_utility"] or 0) >= floor * (r["target"]["model_utility"] or 0)]
    return max(ok or rows, key=lambda r: (r["unlearned"]["forget_quality"] or 0.0,
                                          -(r["unlearned"]["forget_Q_A_Prob"] or 0.0)))


def attacked_already(run_dir: Path) -> bool:
    robustness = json.loads((run_dir / "results.json").read_text()).get("robustness") or {}
    return "relearn" in robustness and "quantize" in robustness


def attack(run_dir: Path, args) -> dict:
    from unlearnkit.attacks.relearn import recovered_fraction
    from unlearnkit.attacks.suite import run_attacks
    from unlearnkit.config import AttacksConfig

    results = json.loads((run_dir / "results.json").read_text())
    robustness = results.get("robustness")
    if not robustness or "relearn" not in robustness:
        config = AttacksConfig(run=["relearn", "quantize"], metrics=["forget_Q_A_Prob"],
                               relearn={"examples": args.relearn_examples, "steps": args.relearn_steps,
                                        "learning_rate": args.relearn_lr, "eval_every": args.relearn_steps,
                                        "control": False},
                               quantize={"schemes": list(SCHEMES)})
        robustness = run_attacks(run_dir, config, progress=False)
    models = results["models"]
    before = models["unlearned"]["aggregates"]["forget_Q_A_Prob"]
    target = models["target"]["aggregates"]["forget_Q_A_Prob"]
    out = {"relearn": robustness["relearn"]["recovered_fraction"]["unlearned"]["forget_Q_A_Prob"]["value"],
           "relearn_after": robustness["relearn"]["recovered_fraction"]["unlearned"]["forget_Q_A_Prob"]["after"],
           "relearn_retain_after": robustness["relearn"]["recovered_fraction"].get("retain", {})
           .get("forget_Q_A_Prob", {}).get("after"),
           "relearn_retain": robustness["relearn"]["recovered_fraction"].get("retain", {})
           .get("forget_Q_A_Prob", {}).get("value")}
    for scheme in SCHEMES:
        after = robustness["quantize"]["unlearned"][scheme]["aggregates"]["forget_Q_A_Prob"]
        out[scheme] = recovered_fraction(after, before, target).value
    return out


def study(args) -> dict:
    import torch

    from unlearnkit.sweep.plan import make_trials, sweep_settings
    from unlearnkit.sweep.runner import Sweep

    torch.set_num_threads(args.threads)
    base = base_config(args)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    data: dict = {"args": vars(args), "tuning": [], "chosen": {}, "runs": []}

    def save():
        if args.json:
            tmp = Path(args.json + ".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, args.json)

    first, rest = args.seeds[0], args.seeds[1:]
    tune = sweep_settings({"seeds": [first]})
    sweep = Sweep(base, tune, Path(args.dir), progress=False, log=log)
    for method in args.methods:
        for optimizer in args.optimizers:
            configs = [overrides(method, optimizer, lr, args.steps) for lr in GRIDS[optimizer]]
            trials = make_trials(sweep.base, configs, tune)
            if not args.collect_only:
                sweep.run(trials)
            rows = []
            for trial, lr in zip(trials, GRIDS[optimizer]):
                if sweep.finished(trial):
                    rows.append({"method": method, "optimizer": optimizer, "lr": lr, "seed": first,
                                 "run": str(sweep.run_dir(trial)), **read_run(sweep.run_dir(trial))})
            data["tuning"].extend(rows)
            save()
            if not rows or (args.collect_only and len(rows) < len(configs)):
                continue  # (collecting: a configuration is chosen only once its whole grid has finished)
            best = choose(rows, args.utility_floor)
            data["chosen"][f"{method}/{optimizer}"] = best["lr"]
            seeds = make_trials(sweep.base, [overrides(method, optimizer, best["lr"], args.steps)],
                                sweep_settings({"seeds": [first, *rest]}))
            if not args.collect_only:
                sweep.run(seeds)
            for trial in seeds:
                if not sweep.finished(trial):
                    continue
                if args.collect_only and not attacked_already(sweep.run_dir(trial)):
                    continue
                started = time.time()
                attacked = attack(sweep.run_dir(trial), args)
                row = {"method": method, "optimizer": optimizer, "lr": best["lr"], "seed": trial.seed,
                       **read_run(sweep.run_dir(trial)), "attacks": attacked}
                row.pop("robustness", None)
                data["runs"].append(row)
                log(f"{method}/{optimizer} lr {best['lr']:g} seed {trial.seed}: forget_quality "
                    f"{row['unlearned']['forget_quality']:.3g}, relearn {attacked['relearn']}, "
                    f"int8 {attacked['int8']} ({time.time() - started:.0f} s of attacks)")
                save()
    for row in data["tuning"]:
        row.pop("robustness", None)
    save()
    return data


def interval(values):
    from unlearnkit.sweep.leaderboard import seed_interval

    return seed_interval([v for v in values if v is not None]) if any(v is not None for v in values) \
        else (None, None, None)


def cell(values, digits: int = 3) -> str:
    mean, low, high = interval(values)
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + ("" if low is None else f" [{low:.{digits}f}, {high:.{digits}f}]")


def table(data: dict) -> str:
    args = data["args"]
    lines = ["| method | optimizer | lr | seeds | forget quality | model utility | forget Q_A_Prob | retain Q_A_Prob "
             "| relearn recovered | (retain model) | forget prob after relearning | (retain model) | int8 recovered "
             "| fp4 recovered | steps | wall s | band |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for row in data["runs"]:
        groups.setdefault((row["method"], row["optimizer"]), []).append(row)
    for (method, optimizer), rows in groups.items():
        fq = [r["unlearned"]["forget_quality"] for r in rows]
        reached = "yes" if interval(fq)[0] is not None and interval(fq)[0] >= args["band"] else "no"
        lines.append(
            f"| {method} | {optimizer} | {rows[0]['lr']:g} | {len(rows)} | {cell(fq)} | "
            f"{cell([r['unlearned']['model_utility'] for r in rows])} | "
            f"{cell([r['unlearned']['forget_Q_A_Prob'] for r in rows])} | "
            f"{cell([r['unlearned'].get('retain_Q_A_Prob') for r in rows])} | "
            f"{cell([r['attacks']['relearn'] for r in rows], 2)} | "
            f"{cell([r['attacks'].get('relearn_retain') for r in rows], 2)} | "
            f"{cell([r['attacks'].get('relearn_after') for r in rows])} | "
            f"{cell([r['attacks'].get('relearn_retain_after') for r in rows])} | {cell([r['attacks']['int8'] for r in rows], 2)} | "
            f"{cell([r['attacks']['fp4'] for r in rows], 2)} | {rows[0]['steps']} | "
            f"{cell([r['seconds'] for r in rows], 0)} | {reached} |")
    if data["runs"]:
        t, r = data["runs"][0]["target"], data["runs"][0]["retain"]
        lines += ["", "target: " + ", ".join(f"{m} {t[m]:.4f}" for m in METRICS if t.get(m) is not None),
                  "retain: " + ", ".join(f"{m} {r[m]:.4f}" for m in METRICS if r.get(m) is not None)]
    tuning: dict = {}
    for row in data["tuning"]:
        tuning.setdefault((row["method"], row["optimizer"]), []).append(
            f"{row['lr']:g} → {row['unlearned']['forget_quality']:.3g} / {row['unlearned']['forget_Q_A_Prob']:.3f} / "
            f"{row['unlearned'].get('retain_Q_A_Prob') or float('nan'):.3f}")
    width = max((len(c) for c in tuning.values()), default=1)
    lines += ["", "Tuning (first seed): forget quality / forget Q_A_Prob / retain Q_A_Prob per learning rate", "",
              "| method | optimizer | " + " | ".join(["lr → fq / forget prob / retain prob"] * width) + " |",
              "|---|---|" + "---|" * width]
    for (method, optimizer), cells in tuning.items():
        lines.append(f"| {method} | {optimizer} | " + " | ".join(cells + [""] * (width - len(cells))) + " |")
    return "\n".join(lines)


def plot(data: dict, path: str) -> None:
    """Forget quality against the relearning and the int8 recovery, one point per (method, optimizer), bars of the
    seed intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = {}
    for row in data["runs"]:
        groups.setdefault((row["method"], row["optimizer"]), []).append(row)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    markers = {"graddiff": "s", "npo": "o"}
    for ax, attack_name in zip(axes, ("relearn", "int8")):
        for i, ((method, optimizer), rows) in enumerate(sorted(groups.items())):
            x = interval([r["attacks"][attack_name] for r in rows])
            y = interval([r["unlearned"]["forget_quality"] for r in rows])
            if x[0] is None or y[0] is None:
                continue
            xerr = None if x[1] is None else [[x[0] - x[1]], [x[2] - x[0]]]
            yerr = None if y[1] is None else [[y[0] - y[1]], [y[2] - y[0]]]
            color = f"C{OPTIMIZERS.index(optimizer)}"
            ax.errorbar(x[0], y[0], xerr=xerr, yerr=yerr, fmt=markers.get(method, "^"), color=color, capsize=2,
                        label=f"{method}/{optimizer}")
        ax.set_xlabel(f"{attack_name}: recovered fraction of forget Q_A_Prob (lower = sticks)")
        ax.set_yscale("log")
    axes[0].set_ylabel("forget quality (higher = closer to retain)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)


def merged(paths: list[str]) -> dict:
    """The studies of several --json files (e.g. one process per method) as one."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    return {"args": parts[0]["args"], "tuning": [r for p in parts for r in p["tuning"]],
            "chosen": {k: v for p in parts for k, v in p["chosen"].items()}, "runs": [r for p in parts for r in p["runs"]]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = merged(args.table_from) if args.table_from else study(args)
    print(table(data))
    if args.plot:
        plot(data, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
