"""The ε scorer (``evaluation/metrics/eps_score.py``) against a dense (rules × models) scorer, same inputs, same ε.

The dense scorer is the tests' (``tests/evaluation/dense_epsilon.py``): per forget example, every rule of the NeurIPS
2023 competition's two families as google-deepmind/unlearning_evaluation ``metric.py`` builds them, a (models × rules)
grid of predictions per side in NumPy (chunks of 8192 rules), float32 means, the reference's ε formula. unlearnkit's
scorer counts with sorted samples and ``np.searchsorted`` and reads ε from a table.

Inputs: made-up logit-scaled confidences of ``--models`` unlearned and ``--models`` retrained models on
``--examples`` forget examples, drawn from seed ``--seed``: per example, retrained ~ N(μ, σ) with μ ~ N(0, 3) and
σ ~ U(0.3, 2.5), unlearned ~ N(μ + shift, σ·scale) with shift ~ N(0, σ) and scale ~ U(0.6, 1.6) — from hardly
distinguishable to well separated (ε from about 0 to the cap). Timing: process CPU seconds (and wall seconds) of
the whole per-example ε of all examples; the fast scorer's median of ``--repeats`` runs, the dense scorer once
(it takes minutes). The script exits with status 1 unless the two ε arrays are identical.

Example::

    python benchmarks/eps_scorer.py --models 512 --examples 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "evaluation"))

from dense_epsilon import dense_epsilons  # the tests' dense scorer

from unlearnkit.evaluation.metrics import eps_score


def confidences(models: int, examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean, scale = rng.normal(0, 3, examples), rng.uniform(0.3, 2.5, examples)
    retrained = rng.normal(mean, scale, (models, examples))
    unlearned = rng.normal(mean + rng.normal(0, scale), scale * rng.uniform(0.6, 1.6, examples), (models, examples))
    return unlearned, retrained


def timed(run):
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=512)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()

    unlearned, retrained = confidences(args.models, args.examples, args.seed)
    fast_runs = [timed(lambda: eps_score.per_example_epsilon(unlearned, retrained)) for _ in range(args.repeats)]
    fast = fast_runs[0][0]
    fast_cpu = statistics.median(run[1] for run in fast_runs)
    fast_wall = statistics.median(run[2] for run in fast_runs)
    dense, dense_cpu, dense_wall = timed(lambda: dense_epsilons(unlearned, retrained))
    identical = bool(np.array_equal(fast, dense))
    points = eps_score.bucket_points(fast, args.models)
    numbers = {
        "models": args.models, "examples": args.examples, "seed": args.seed,
        "fast_cpu_s": fast_cpu, "fast_wall_s": fast_wall, "dense_cpu_s": dense_cpu, "dense_wall_s": dense_wall,
        "speedup_cpu": dense_cpu / fast_cpu, "speedup_wall": dense_wall / fast_wall, "identical": identical,
        "differing_examples": int(np.sum(fast != dense)),
        "epsilon_min_median_max": [float(fast.min()), float(np.median(fast)), float(fast.max())],
        "capped_examples": int(np.sum(fast == eps_score.EPSILON_CAP)),
        "forget_quality": float(points.mean()),
    }
    for name, value in numbers.items():
        print(f"{name:24s} {value}")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
