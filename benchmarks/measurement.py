"""How the benchmarks measure: interleaved repeated timings with their median, peak RSS, and a plain-text table."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Callable, Sequence


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each callable, ``repeats`` times, in rounds (a, b, a, b, ...).

    Interleaving spreads any slow-down of a shared machine over every measurement instead of one of them.
    Returns every time; take :func:`statistics.median` of each list.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """``min-max`` of the runs, for the table."""
    return f"{min(values):.3f}-{max(values):.3f}"


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux ``VmRSS``), or None where /proc is unavailable."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux: write 5 to /proc/self/clear_refs).

    Returns False where that is not possible; ``peak_rss_bytes`` is then the peak since the process started.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size in bytes since the start or the last :func:`reset_peak_rss`.

    Linux ``VmHWM``, the high-water mark that ``clear_refs`` resets; elsewhere ``getrusage(...).ru_maxrss``
    (the same mark, but it also keeps the peak of exited threads, so it is not reset).
    """
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])
