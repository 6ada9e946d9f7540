"""A sweep's leaderboard: one row per configuration, means and 95% intervals over seeds, the Pareto front, the best.

- **Interval over seeds**: for n ≥ 2 finished seeds, the Student-t interval mean ± t(0.975, n−1)·s/√n (s the sample
  standard deviation); none for one seed. It says how much the *configuration's* result moves with the seed; each
  run's own bootstrap interval over examples stays in its run directory.
- **Pareto front** of the two objectives (each in its metric-table direction: higher or lower is better), on the
  configurations' means: a configuration is on the front when no other is at least as good on both and better on
  one. Configurations missing a value are not on it.
- **Best configuration, the rule**: among the front, those whose second objective (model utility by default) is
  within ``utility_floor`` of the target model's — ≥ floor × target for a higher-is-better metric, ≤ target / floor
  for a lower-is-better one — and of those the one with the best first objective (forget quality by default). If
  none qualifies, the front's configuration with the best second objective, and the leaderboard says so.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from unlearnkit.errors import UnlearnkitError
from unlearnkit.runio import write_json
from unlearnkit.sweep.plan import Trial, label


@dataclass
class Row:
    """One configuration: its overrides, the seeds that finished, and per metric the values, mean and interval."""

    config_id: str
    overrides: dict
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    target: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return label(self.overrides)

    def mean(self, metric: str) -> float | None:
        return seed_interval(self.values.get(metric, []))[0]

    def target_mean(self, metric: str) -> float | None:
        return seed_interval(self.target.get(metric, []))[0]


def seed_interval(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the Student-t 95% interval over seeds; (None, None, None) if any value is missing."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None, None, None
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, None, None
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def directions(objectives: list[str]) -> list[str]:
    """Each objective's direction from the metric table; metrics judged by closeness to the retain model (or
    unknown ones) cannot be an axis of a Pareto front: a one-line error naming them."""
    from unlearnkit.evaluation.metrics import registry

    out = []
    for name in objectives:
        declared = registry.metric(name)
        if declared is None or declared.better not in ("higher", "lower"):
            why = "is not a metric" if declared is None else "is judged by closeness to the retain model"
            raise UnlearnkitError(f"sweep objective {name!r} {why}: choose metrics where higher or lower is better "
                                  "(e.g. forget_quality, model_utility)")
        out.append(declared.better)
    return out


def collect(trials: list[Trial], runs_dir: Path, metrics: list[str]) -> list[Row]:
    """The finished trials' unlearned (and target) aggregates, grouped by configuration, in the trials' order."""
    rows: dict[str, Row] = {}
    for trial in trials:
        path = runs_dir / trial.name / "results.json"
        if not path.is_file():
            continue
        models = json.loads(path.read_text())["models"]
        row = rows.setdefault(trial.config_id, Row(trial.config_id, trial.overrides))
        row.seeds.append(trial.seed)
        for name in metrics:
            row.values.setdefault(name, []).append(models["unlearned"]["aggregates"].get(name))
            row.target.setdefault(name, []).append(models.get("target", {}).get("aggregates", {}).get(name))
    return list(rows.values())


def _oriented(value: float, better: str) -> float:
    return value if better == "higher" else -value


def pareto_front(points: list[tuple[float | None, ...]], better: list[str]) -> list[int]:
    """Indices of the points no other point dominates (at least as good on every axis, better on one)."""
    ok = [i for i, p in enumerate(points) if all(v is not None for v in p)]
    oriented = {i: [_oriented(v, b) for v, b in zip(points[i], better)] for i in ok}
    front = []
    for i in ok:
        dominated = any(all(a >= b for a, b in zip(oriented[j], oriented[i])) and oriented[j] != oriented[i]
                        for j in ok if j != i)
        if not dominated:
            front.append(i)
    return front


def choose_best(rows: list[Row], front: list[int], objectives: list[str], better: list[str],
                floor: float) -> tuple[int | None, str]:
    """The rule of the module docstring: (index of the best row, the sentence that says why)."""
    first, second = objectives
    if not front:
        return None, "no configuration has both objectives"

    def within(row: Row) -> bool:
        value, target = row.mean(second), row.target_mean(second)
        if target is None:
            return False
        return value >= floor * target if better[1] == "higher" else value <= target / floor

    qualified = [i for i in front if within(rows[i])]
    if qualified:
        best = max(qualified, key=lambda i: _oriented(rows[i].mean(first), better[0]))
        return best, (f"the Pareto configuration with the best {first} among those whose {second} is within "
                      f"{floor:g}× of the target model's")
    best = max(front, key=lambda i: _oriented(rows[i].mean(second), better[1]))
    return best, (f"no Pareto configuration keeps {second} within {floor:g}× of the target model's: the one with the "
                  f"best {second}")


def build(trials: list[Trial], runs_dir: Path, objectives: list[str], floor: float,
          failed: dict[str, str] | None = None) -> dict:
    """The leaderboard as data: rows (sorted by the first objective), front, best and the rule, failures."""
    from unlearnkit.evaluation.metrics import registry

    better = directions(objectives)
    shown = list(dict.fromkeys([*objectives, *registry.headline()]))
    rows = collect(trials, runs_dir, shown)
    shown = [m for m in shown if m in objectives or any(v is not None for r in rows for v in r.values[m])]
    rows.sort(key=lambda r: (r.mean(objectives[0]) is None, -_oriented(r.mean(objectives[0]) or 0.0, better[0])))
    front = pareto_front([tuple(r.mean(o) for o in objectives) for r in rows], better)
    best, rule = choose_best(rows, front, objectives, better, floor)
    return {
        "objectives": objectives, "directions": better, "utility_floor": floor, "rule": rule,
        "best": rows[best].config_id if best is not None else None,
        "pareto_front": [rows[i].config_id for i in front],
        "rows": [{"config_id": r.config_id, "label": r.label, "overrides": r.overrides, "seeds": r.seeds,
                  "metrics": {m: dict(zip(("mean", "low", "high"), seed_interval(r.values[m]))) for m in shown},
                  "target": {m: r.target_mean(m) for m in objectives}} for r in rows],
        "failed": failed or {},
    }


def _cell(stat: dict) -> str:
    if stat["mean"] is None:
        return "—"
    if stat["low"] is None:
        return f"{stat['mean']:.4g}"
    return f"{stat['mean']:.4g} [{stat['low']:.4g}, {stat['high']:.4g}]"


def markdown(board: dict) -> str:
    metrics = list(board["rows"][0]["metrics"]) if board["rows"] else board["objectives"]
    lines = ["# Sweep leaderboard", "",
             f"Means over seeds with 95% Student-t intervals. ★ best ({board['rule']}); ◆ on the Pareto front of "
             f"{' and '.join(board['objectives'])}.", "",
             "| | configuration | seeds | " + " | ".join(metrics) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in metrics) + " |"]
    for row in board["rows"]:
        mark = "★" if row["config_id"] == board["best"] else ("◆" if row["config_id"] in board["pareto_front"] else "")
        cells = " | ".join(_cell(row["metrics"][m]) for m in metrics)
        lines.append(f"| {mark} | {row['label']} (`c{row['config_id']}`) | {len(row['seeds'])} | {cells} |")
    for name, message in board["failed"].items():
        lines.append(f"\nfailed: `{name}`: {message}")
    return "\n".join(lines) + "\n"


def scatter_svg(board: dict) -> str:
    """The configurations on the plane of the two objectives (front joined, best starred), as inline SVG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name, y_name = board["objectives"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row in board["rows"]:
        x, y = row["metrics"][x_name], row["metrics"][y_name]
        if x["mean"] is None or y["mean"] is None:
            continue
        xerr = None if x["low"] is None else [[x["mean"] - x["low"]], [x["high"] - x["mean"]]]
        yerr = None if y["low"] is None else [[y["mean"] - y["low"]], [y["high"] - y["mean"]]]
        best = row["config_id"] == board["best"]
        ax.errorbar(x["mean"], y["mean"], xerr=xerr, yerr=yerr, fmt="*" if best else "o",
                    markersize=12 if best else 5, color="C3" if best else "C0", capsize=2)
        ax.annotate(row["label"], (x["mean"], y["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = [r for r in board["rows"] if r["config_id"] in board["pareto_front"]]
    front.sort(key=lambda r: r["metrics"][x_name]["mean"])
    ax.plot([r["metrics"][x_name]["mean"] for r in front], [r["metrics"][y_name]["mean"] for r in front], "--",
            color="C1", label="Pareto front")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg"):]


def html_page(board: dict) -> str:
    metrics = list(board["rows"][0]["metrics"]) if board["rows"] else []
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = []
    for row in board["rows"]:
        mark = "★" if row["config_id"] == board["best"] else ("◆" if row["config_id"] in board["pareto_front"] else "")
        cells = "".join(f"<td>{html.escape(_cell(row['metrics'][m]))}</td>" for m in metrics)
        body.append(f"<tr><td>{mark}</td><td>{html.escape(row['label'])} <code>c{row['config_id']}</code></td>"
                    f"<td>{len(row['seeds'])}</td>{cells}</tr>")
    failed = "".join(f"<p>failed: <code>{html.escape(n)}</code>: {html.escape(m)}</p>" for n, m in board["failed"].items())
    plot = scatter_svg(board) if board["rows"] else ""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Sweep leaderboard</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:3px 6px;font-size:13px}</style></head><body><h1>Sweep leaderboard</h1>"
            f"<p>Means over seeds with 95% Student-t intervals. ★ best: {html.escape(board['rule'])}. ◆ on the Pareto "
            f"front of {html.escape(' and '.join(board['objectives']))}.</p>{plot}"
            f"<table><tr><th></th><th>configuration</th><th>seeds</th>{head}</tr>{''.join(body)}</table>{failed}"
            "</body></html>")


def write(board: dict, directory: Path) -> None:
    """leaderboard.json, leaderboard.md and leaderboard.html in the sweep directory (each written atomically)."""
    write_json(directory / "leaderboard.json", board)
    for name, text in (("leaderboard.md", markdown(board)), ("leaderboard.html", html_page(board))):
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(directory / name)
