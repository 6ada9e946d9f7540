"""NPO with LoRA on every layer vs on the layers Flexora's search selects (``model.lora.layers: all | flexora``).

Issue #21's study (docs/bilevel.md, "Flexora"): on the synthetic TOFU-like task with the ``tiny`` base, for each
seed, two runs that differ only in ``model.lora.layers``. Each run unlearns with NPO (its default retain NLL) through
LoRA adapters, is evaluated by the TOFU suite, then attacked by relearning (the run's ``attacks: {run: [relearn]}``,
what ``unlearnkit attack --attack relearn`` does): fine-tuning on ``--relearn-examples`` forget examples for
``--relearn-steps`` steps, and the recovered fraction (after - unlearned) / (target - unlearned) of each forget
metric (research/metrics.md §6).

Reported per setting: the mean and standard deviation over seeds of forget quality, model utility, forget Q_A_Prob,
forget ROUGE, the recovered fraction of forget Q_A_Prob after relearning, the number of LoRA layers and trainable
adapter parameters, and the seconds per run (Flexora's include its search). The seed is the run's ``seed:`` (the data
order, the LoRA initialisation, Flexora's held-out slices); the target and retain models are the ones the first run
prepared (fine-tuned with the first seed) and are given to the later runs as ``model.target`` / ``model.retain``, so
that the seeds vary the unlearning and not the model being unlearned.

Examples::

    python benchmarks/flexora_study.py --threads 2 --json flexora.json     # 3 seeds
    python benchmarks/flexora_study.py --seeds 0 --search-steps 10          # a quick look
    python benchmarks/flexora_study.py --table-from flexora.json

Run directories go to a temporary folder (``--keep DIR`` keeps them); the model cache is unlearnkit's.
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

METRICS = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--layers", nargs="+", choices=("all", "flexora"), default=["all", "flexora"])
    parser.add_argument("--people", type=int, default=20, help="people of the synthetic task")
    parser.add_argument("--forget-people", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--search-steps", type=int, default=30)
    parser.add_argument("--unroll-steps", type=int, default=1)
    parser.add_argument("--relearn-examples", type=int, default=8)
    parser.add_argument("--relearn-steps", type=int, default=30)
    parser.add_argument("--relearn-lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", metavar="DIR", default=None)
    parser.add_argument("--json", metavar="PATH", default=None, help="write every number here (after every run)")
    parser.add_argument("--table-from", metavar="PATH", default=None)
    return parser.parse_args(argv)


def config(args, layers: str, seed: int, output_dir: Path, prepared: dict) -> dict:
    lora = {"r": args.rank, "alpha": 2 * args.rank, "layers": layers}
    model = {"base": "tiny", "lora": lora, **prepared}
    if layers == "flexora":
        model["flexora"] = {"search_steps": args.search_steps, "unroll_steps": args.unroll_steps}
    relearn = {"examples": args.relearn_examples, "steps": args.relearn_steps, "learning_rate": args.relearn_lr,
               "eval_every": args.relearn_steps, "control": False}
    return {"task": {"source": "synthetic", "options": {"n_people": args.people, "forget_people": args.forget_people}},
            "model": model, "method": {"name": "npo"},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                      "warmup_steps": 0, "schedule": "constant"},
            "eval": {"max_new_tokens": 32, "intervals": False},
            "attacks": {"run": ["relearn"], "relearn": relearn,
                        "metrics": ["forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility"]},
            "seed": seed, "output_dir": str(output_dir)}


def adapter_parameters(run_dir: Path) -> int:
    """The number of trained adapter weights (A and B of every adapted module) in the run's adapter/."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as f:
        for key in f.keys():
            size = 1
            for n in f.get_slice(key).get_shape():
                size *= n
            total += size
    return total


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def summarise(rows: list[dict]) -> str:
    head = ["layers", "seeds", *METRICS, "recovered forget_Q_A_Prob", "LoRA layers", "adapter parameters", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layers in ("all", "flexora"):
        runs = [r for r in rows if r["layers"] == layers]
        if not runs:
            continue
        cells = [mean_sd([r["unlearned"][m] for r in runs]) for m in METRICS]
        cells.append(mean_sd([r["recovered"] for r in runs]))
        cells.append(", ".join(str(r["lora_layers"]) for r in runs))
        cells.append(", ".join(str(r["adapter_parameters"]) for r in runs))
        cells.append(mean_sd([r["seconds"] for r in runs]))
        lines.append(f"| {layers} | {', '.join(str(r['seed']) for r in runs)} | " + " | ".join(cells) + " |")
    if rows:
        for who in ("target", "retain"):
            values = rows[0].get(who) or {}
            lines.append(f"\n{who}: " + ", ".join(f"{m} {values[m]:.4f}" for m in METRICS if values.get(m) is not None))
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from:
        print(summarise(json.loads(Path(args.table_from).read_text())["runs"]))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    import unlearnkit

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="flexora-"))
    rows = []
    prepared: dict = {}  # the first run's target and retain folders, for every later run
    for seed in args.seeds:
        for layers in args.layers:
            out = root / f"{layers}-{seed}"
            started = time.time()
            results = unlearnkit.unlearn(config(args, layers, seed, out, prepared), progress=False).results
            if not prepared:
                audit = json.loads((out / "audit.json").read_text())["models"]
                prepared = {"target": audit["target"]["path"], "retain": audit["retain"]["path"]}
            models = results["models"]
            recovered = results["robustness"]["relearn"]["recovered_fraction"]["unlearned"]["forget_Q_A_Prob"]
            flexora = results.get("flexora")
            rows.append({
                "layers": layers, "seed": seed, "seconds": round(time.time() - started, 1),
                "lora_layers": flexora["layers"] if flexora else "all",
                "gates": flexora["gates"] if flexora else None,
                "search_seconds": flexora["seconds"] if flexora else 0.0,
                "adapter_parameters": adapter_parameters(out),
                "recovered": recovered["value"],
                **{who: {m: models[who]["aggregates"].get(m) for m in METRICS} for who in models}})
            print(f"{layers} seed {seed}: " + ", ".join(f"{m} {rows[-1]['unlearned'][m]:.4f}" for m in METRICS)
                  + f", recovered {recovered['value']}, layers {rows[-1]['lora_layers']} ({rows[-1]['seconds']} s)",
                  file=sys.stderr)
            if args.json:
                write_json(Path(args.json), {"args": vars(args), "runs": rows})
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
