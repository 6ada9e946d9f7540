"""``aggregate_intervals`` (vectorised bootstrap) against the per-resample loop it replaced, on TOFU-sized inputs.

The per-resample ("loop") version is the implementation before the vectorised bootstrap, written out here on the
public API with plain Python callables, so that every statistic is computed from scratch on each of the B resamples:
``np.mean`` of the resample, ``tofu.closer_to_1_better`` / ``tofu.true_better``, the harmonic mean of the nine
model-utility aggregates (``scipy.stats.hmean``), ``scipy.stats.ks_2samp`` for forget quality, and
``mia.mia_auc`` (``sklearn.metrics.roc_auc_score``) for each membership AUC and privleak. Both see the same draws
(seed 0), so their intervals agree: bit for bit except the AUCs and privleak, which differ by sklearn's rounding; the
script prints the largest difference and exits with status 1 if it exceeds ``--tolerance``.

Inputs: a made-up TOFU result (the 23 aggregates of the suite's default metric set, with their per-example values)
of the sizes of OpenUnlearning's TOFU evaluation: forget and holdout 40 (forget01), 200 (forget05) or 400
(forget10), the retain evaluation split 400, real authors 100, world facts 117, and the retain model's 40/200/400
forget truth ratios as the reference. The values are drawn from seed 0 with the ties the real metrics have (ROUGE
recalls, extraction strength and exact memorization are short fractions). Timing: process CPU seconds and wall
seconds of one call, the median of ``--repeats`` calls of each version, interleaved.

Examples::

    python benchmarks/intervals_speed.py --threads 1
    python benchmarks/intervals_speed.py --threads 1 --splits forget01 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


def _threads_from_argv() -> str:
    """--threads N, read before numpy is imported (its BLAS reads the thread count once)."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = _threads_from_argv()

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from measurement import table  # noqa: E402
from unlearnkit.evaluation.metrics import mia  # noqa: E402
from unlearnkit.evaluation.metrics import tofu as tofu_metrics  # noqa: E402
from unlearnkit.evaluation.metrics.intervals import aggregate_intervals  # noqa: E402
from unlearnkit.evaluation.metrics.statistics import bootstrap_ci, bootstrap_ci_multi  # noqa: E402

SPLITS = {"forget01": 40, "forget05": 200, "forget10": 400}
RETAIN, REAL_AUTHORS, WORLD_FACTS = 400, 100, 117
MIA = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "mia_reference")
UTILITY_SPLITS = (("retain", "retain_Q_A_Prob"), ("ra", "ra_Q_A_Prob_normalised"), ("wf", "wf_Q_A_Prob_normalised"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", nargs="+", choices=sorted(SPLITS), default=sorted(SPLITS),
                        help="TOFU forget splits whose sizes to use (default: all three)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples B (the pipeline's: 1000)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls of each version, interleaved")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP/OpenBLAS/MKL thread count, set before numpy loads (default 1)")
    parser.add_argument("--tolerance", type=float, default=1e-12,
                        help="largest allowed |vectorised - loop| of an interval end, relative to its size")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def fractions(rng: np.random.Generator, n: int, longest: int = 12) -> list[float]:
    """k/T with T up to ``longest``: the ties of ROUGE recalls and token-match fractions."""
    lengths = rng.integers(1, longest + 1, size=n)
    return (rng.integers(0, lengths + 1) / lengths).tolist()


def made_up_result(n_forget: int, seed: int = 0) -> tuple[dict, dict, dict]:
    """(aggregates, per_example, reference) of a TOFU evaluation of these sizes (the aggregates' values unused)."""
    rng = np.random.default_rng(seed)
    per: dict[str, list[float]] = {}
    for prefix, n in (("forget", n_forget), ("retain", RETAIN), ("ra", REAL_AUTHORS), ("wf", WORLD_FACTS)):
        normalised = prefix in ("ra", "wf")
        per[f"{prefix}_Q_A_Prob{'_normalised' if normalised else ''}"] = rng.beta(2, 2, n).tolist()
        per[f"{prefix}_Q_A_ROUGE"] = fractions(rng, n)
        per[f"{prefix}_Truth_Ratio"] = rng.lognormal(-0.3, 0.5, n).tolist()
    per["extraction_strength"] = fractions(rng, n_forget, 30)
    per["exact_memorization"] = fractions(rng, n_forget, 30)
    for metric in MIA:
        per[f"{metric}_forget"] = rng.normal(1.0, 0.5, n_forget).tolist()
        per[f"{metric}_holdout"] = rng.normal(1.3, 0.5, n_forget).tolist()
    reference = {"forget_truth_ratios": rng.lognormal(0.0, 0.5, n_forget).tolist(), "mia_min_k_auc": 0.5}
    names = [name for name in per if not name.endswith(("_forget", "_holdout"))]
    names += [*MIA, "forget_quality", "forget_quality_log10", "model_utility", "privleak"]
    return {name: 0.5 for name in names}, per, reference


# --- the per-resample loop: the implementation before the vectorised bootstrap ------------------------------------


def _present(values) -> list[float] | None:
    kept = [float(v) for v in values or [] if v is not None and math.isfinite(float(v))]
    return kept if len(kept) >= 2 else None


def _plain_mean(values: np.ndarray) -> float:
    return float(np.mean(values))  # a plain callable: computed one resample at a time (np.mean itself is vectorised)


def loop_aggregate_intervals(aggregates: dict, per_example: dict, reference: dict | None = None,
                             n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    ref = reference or {}
    settings = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    out: dict[str, list | None] = {}
    for name, value in aggregates.items():
        interval = _loop_interval(name, per_example, ref, settings) if value is not None else None
        out[name] = list(interval) if interval is not None else None
    return out


def _loop_interval(name: str, per_example: dict, ref: dict, settings: dict):
    if name.endswith(("_Q_A_Prob", "_Q_A_Prob_normalised", "_Q_A_ROUGE")) or name in (
            "extraction_strength", "exact_memorization"):
        values = _present(per_example.get(name))
        return bootstrap_ci(values, _plain_mean, **settings) if values else None
    if name.endswith("_Truth_Ratio"):
        values = _present(per_example.get(name))
        aggregate = tofu_metrics.closer_to_1_better if name.startswith("forget") else tofu_metrics.true_better
        return bootstrap_ci(values, aggregate, **settings) if values else None
    if name in ("forget_quality", "forget_quality_log10"):
        ours, theirs = _present(per_example.get("forget_Truth_Ratio")), _present(ref.get("forget_truth_ratios"))
        if not ours or not theirs:
            return None
        low, high = bootstrap_ci_multi([ours, theirs], lambda a, b: stats.ks_2samp(a, b).pvalue, **settings)
        if name == "forget_quality":
            return low, high
        return tuple(math.log10(p) if p > 0 else float("-inf") for p in (low, high))
    if name == "model_utility":
        groups = [tuple(np.asarray(per_example[n], dtype=np.float64)
                        for n in (prob, f"{prefix}_Q_A_ROUGE", f"{prefix}_Truth_Ratio"))
                  for prefix, prob in UTILITY_SPLITS]

        def utility(*blocks) -> float:
            nine = []
            for (prefix, _), (prob, rouge, ratio) in zip(UTILITY_SPLITS, blocks):
                truth = tofu_metrics.closer_to_1_better if prefix == "forget" else tofu_metrics.true_better
                nine += [float(np.mean(prob)), float(np.mean(rouge)), truth(ratio)]
            return 0.0 if min(nine) <= 0 else float(stats.hmean(nine))

        return bootstrap_ci_multi(groups, utility, **settings)
    if name.startswith("mia_") or name == "privleak":
        metric = "mia_min_k" if name == "privleak" else name
        forget, holdout = _present(per_example.get(f"{metric}_forget")), _present(per_example.get(f"{metric}_holdout"))
        if not forget or not holdout:
            return None
        if name == "privleak":
            reference_auc = float(ref["mia_min_k_auc"])
            return bootstrap_ci_multi([forget, holdout],
                                      lambda f, h: mia.privleak(mia.mia_auc(f, h), reference_auc), **settings)
        return bootstrap_ci_multi([forget, holdout], mia.mia_auc, **settings)
    return None


# --- timing ------------------------------------------------------------------------------------------------------


def timed(function, *args) -> tuple[object, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = function(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def largest_difference(fast: dict, loop: dict) -> tuple[float, str, int]:
    """max over interval ends of |fast − loop| / max(1, |loop|), the metric where it is, and how many ends differ."""
    worst, where, differing = 0.0, "-", 0
    for name, ends in loop.items():
        if (fast[name] is None) != (ends is None):
            return math.inf, name, -1
        for a, b in zip(fast[name] or [], ends or []):
            differing += a != b
            gap = 0.0 if a == b else abs(a - b) / max(1.0, abs(b))
            if gap > worst:
                worst, where = gap, name
    return worst, where, differing


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    rows, results = [], {}
    for split in args.splits:
        aggregates, per, reference = made_up_result(SPLITS[split])
        fast_runs, loop_runs = [], []
        for _ in range(args.repeats):
            fast, *fast_time = timed(aggregate_intervals, aggregates, per, reference, args.resamples)
            loop, *loop_time = timed(loop_aggregate_intervals, aggregates, per, reference, args.resamples)
            fast_runs.append(fast_time)
            loop_runs.append(loop_time)
        fast_cpu, fast_wall = np.median(fast_runs, axis=0)
        loop_cpu, loop_wall = np.median(loop_runs, axis=0)
        worst, where, differing = largest_difference(fast, loop)
        n = SPLITS[split]
        results[split] = {"sizes": {"forget": n, "holdout": n, "retain": RETAIN, "ra": REAL_AUTHORS,
                                    "wf": WORLD_FACTS, "reference": n},
                          "vectorised_s": {"cpu": [r[0] for r in fast_runs], "wall": [r[1] for r in fast_runs]},
                          "loop_s": {"cpu": [r[0] for r in loop_runs], "wall": [r[1] for r in loop_runs]},
                          "ratio_cpu": loop_cpu / fast_cpu, "max_relative_difference": worst,
                          "differing_ends": differing, "intervals": len(aggregates)}
        rows.append([split, f"{n}/{n}/{RETAIN}/{REAL_AUTHORS}/{WORLD_FACTS}", len(aggregates),
                     f"{loop_cpu:.3f} ({loop_wall:.3f})", f"{fast_cpu:.4f} ({fast_wall:.4f})",
                     f"{loop_cpu / fast_cpu:.0f}×", f"{worst:.1e} ({where}); {differing} of {2 * len(aggregates)}"])
    print(f"B = {args.resamples}, 95% percentile intervals, seed 0; threads {os.environ['OMP_NUM_THREADS']}; "
          f"median of {args.repeats} call(s) each, interleaved")
    print(table(["sizes", "forget/holdout/retain/ra/wf", "intervals", "loop s CPU (wall)",
                 "vectorised s CPU (wall)", "loop/vectorised", "max |diff| (where); ends that differ"], rows))
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "resamples": args.resamples,
           "threads": int(os.environ["OMP_NUM_THREADS"]), "repeats": args.repeats, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if not all(r["max_relative_difference"] <= args.tolerance for r in results.values()):
        print(f"FAILED: the two versions differ by more than {args.tolerance:g}", file=sys.stderr)
        sys.exit(1)
    return out


if __name__ == "__main__":
    main()
