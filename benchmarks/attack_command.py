"""``unlearnkit attack RUN --attack relearn,quantize`` on the demo's run: the path before the speed-ups against now.

Issue #15's goal: the command took 628 s on the demo's run on a quiet 2-core machine (seven times the warm demo);
it must take ≤ 120 s with the same reported numbers. Both paths run here, in one process, on copies of one run
directory, with the attacks' default budget (``AttacksConfig()``: relearning 8 examples × 100 steps, evaluated every
10, with its control; int8 and fp4):

- ``before``: every curve point generates (``relearn.curve_generation: true``), the quantized models run on
  bitsandbytes' kernels (``quantize.kernel: bitsandbytes``), nothing is kept per model (``reuse: false``). (The one
  change of the new code this path still has: the untouched model's evaluations are read from the store.)
- ``now (first attack)``: the defaults, with no attack outcome kept yet for these models (the benchmark uses a
  private cache).
- ``now (another run, same target and retain)``: the defaults again on a second copy whose unlearned model differs
  by one weight (so only the target's and the retain model's outcomes can be reused): what each further run of a
  study pays.

It prints the times, the ratios against ``before``, and the largest difference between the reported numbers of
``before`` and ``now`` (recovered fractions and quantized aggregates). Example::

    python benchmarks/attack_command.py               # makes the demo's run first if --run is not given
    python benchmarks/attack_command.py --run runs/demo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from unlearnkit.attacks.suite import run_attacks  # noqa: E402
from unlearnkit.config import AttacksConfig  # noqa: E402


def attack_settings(before: bool) -> AttacksConfig:
    data = {"run": ["relearn", "quantize"]}
    if before:
        data.update(relearn={"curve_generation": True}, quantize={"kernel": "bitsandbytes"}, reuse=False)
    return AttacksConfig.model_validate(data)


def nudge_one_weight(run_dir: Path) -> None:
    """Another unlearned model: one weight of the saved model moved by 1e-3 (its fingerprint changes)."""
    path = run_dir / "model" / "model.safetensors"
    weights = load_file(path)
    name = sorted(weights)[0]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1e-3
    save_file(weights, path, metadata={"format": "pt"})


def largest_difference(a: dict, b: dict) -> float:
    """max |a − b| over the recovered fractions and the quantized aggregates that both report."""
    worst = 0.0
    for who, metrics in a["relearn"]["recovered_fraction"].items():
        for name, entry in metrics.items():
            other = b["relearn"]["recovered_fraction"][who][name]["value"]
            if entry["value"] is not None and other is not None:
                worst = max(worst, abs(entry["value"] - other))
    for who, schemes in a["quantize"].items():
        for scheme, result in schemes.items():
            for name, value in result["aggregates"].items():
                other = b["quantize"][who][scheme]["aggregates"].get(name)
                if value is not None and other is not None:
                    worst = max(worst, abs(value - other))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished run directory (default: the demo's, made here)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="attack-bench-"))
    # a private cache: the target and retain models are prepared (or the demo made) afresh in it, and no attack
    # outcome is kept in it yet, whatever the user's cache holds
    os.environ["UNLEARNKIT_CACHE"] = str(scratch / "cache")
    try:
        source = args.run
        if source is None:
            from unlearnkit import unlearn
            from unlearnkit.demo import DEMO_CONFIG

            source = unlearn(DEMO_CONFIG, output_dir=str(scratch / "demo"), progress=False).run_dir
        copies = {}
        for name in ("before", "first", "another"):
            copies[name] = scratch / name
            shutil.copytree(source, copies[name])
        nudge_one_weight(copies["another"])
        times, outcomes = {}, {}
        for name, before in (("before", True), ("first", False), ("another", False)):
            start = time.perf_counter()
            outcomes[name] = run_attacks(copies[name], attack_settings(before), progress=False)
            times[name] = time.perf_counter() - start
        print(f"threads {args.threads}; run {source}")
        print(f"{'path':<44}{'seconds':>10}{'ratio':>10}")
        labels = {"before": "before (generation everywhere, bitsandbytes)", "first": "now, first attack",
                  "another": "now, another run (same target and retain)"}
        for name, seconds in times.items():
            print(f"{labels[name]:<44}{seconds:>10.1f}{times['before'] / seconds:>10.2f}")
        print(f"largest difference of a reported number, before vs now: "
              f"{largest_difference(outcomes['before'], outcomes['first']):.2e}")
        print(json.dumps({"seconds": times}, indent=None))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
