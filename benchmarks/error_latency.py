"""How long a bad input takes to be reported: every case of the bad-input corpus (``tests/cli/test_bad_inputs.py``)
run as a real process, ``python -m unlearnkit ...``, from start to exit (issue #20's goal: a config, data or path
error in ≤ 1.5 s on a quiet 2-core machine).

Each case's files are made in a fresh folder (with its own ``UNLEARNKIT_CACHE``), then the command runs there once
(or ``--repeat`` times, keeping the fastest). It prints each case's seconds and exit status, then the median and the
worst, overall and per kind (config, data, model, cache, rundir). ``--src`` runs the command from another source
tree (e.g. an older commit's ``src``, extracted with ``git archive``) against the same cases::

    python benchmarks/error_latency.py
    git archive d97f864 src | tar -x -C /tmp/before && python benchmarks/error_latency.py --src /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_cases() -> list:
    sys.path.insert(0, str(ROOT / "tests" / "cli"))
    import test_bad_inputs

    return test_bad_inputs.CASES


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_case(case, src: Path, repeat: int) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, exit status, last stderr line) of the fastest of ``repeat`` runs."""
    name, setup, argv, _ = case
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=f"latency-{name}-") as folder:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(src), "UNLEARNKIT_CACHE": f"{folder}/cache"}
        os.environ["UNLEARNKIT_CACHE"] = env["UNLEARNKIT_CACHE"]  # the setup computes cache paths too
        os.chdir(folder)
        try:
            setup()
        finally:
            os.chdir(here)
        best, cpu, proc = float("inf"), float("inf"), None
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), _children_cpu()
            proc = subprocess.run([sys.executable, "-m", "unlearnkit", *argv], cwd=folder, env=env, check=False,
                                  capture_output=True, text=True, timeout=600)
            best, cpu = min(best, time.perf_counter() - start), min(cpu, _children_cpu() - start_cpu)
    return best, cpu, proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="source tree the command runs from")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is kept")
    parser.add_argument("-k", default="", help="only the cases whose name contains this")
    args = parser.parse_args()
    cases = [c for c in load_cases() if args.k in c[0]]
    times: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for case in cases:
        seconds, cpu, code, line = time_case(case, args.src.resolve(), args.repeat)
        times[case[0]], cpus[case[0]] = seconds, cpu
        flag = "" if code == 2 else f"  (exit {code}, expected 2)"
        print(f"{case[0]:<42}{seconds:7.2f} s wall {cpu:6.2f} s CPU  exit {code}{flag}  {line[:80]}", flush=True)
    print(f"\n{len(times)} cases from {args.src}, wall (CPU) seconds:")
    for kind in ("", "config", "data", "model", "cache", "rundir"):
        names = [name for name in times if name.startswith(kind)]
        if names:
            worst = max(names, key=times.get)
            print(f"  {kind or 'all':<8} {len(names):>3} cases: median {statistics.median(times[n] for n in names):.2f} "
                  f"({statistics.median(cpus[n] for n in names):.2f}), worst {times[worst]:.2f} ({cpus[worst]:.2f}) "
                  f"{worst}")


if __name__ == "__main__":
    main()
