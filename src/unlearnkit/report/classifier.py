"""report.html of a classifier run: the leaderboard of methods, a score table per method, and the ε histograms.

Rendered from results.json alone (``classifier/pipeline.py`` writes it), self-contained like the LLM report
(``report/html.py``): inline CSS and SVG (matplotlib through ``report/plots.py``'s figure helpers), no script.
Brackets are 95 % percentile-bootstrap intervals: over members for UA, RA, TA, MIA-Efficacy and Avg. Gap, over
forget examples for F and over points for KLOM (``classifier/scoring.py``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from jinja2 import Environment, select_autoescape

from unlearnkit.report.plots import _svg

COLUMNS = (  # (key in aggregates, header, better)
    ("forget_quality", "F (ε)", "higher"),
    ("final_score", "final score", "higher"),
    ("avg_gap", "Avg. Gap", "lower"),
    ("klom_forget", "KLOM forget", "lower"),
    ("unlearning_accuracy", "UA", "≈ reference"),
    ("retain_accuracy", "RA", "≈ reference"),
    ("test_accuracy", "TA", "≈ reference"),
    ("mia_efficacy", "MIA-Eff.", "≈ reference"),
)
MEANINGS = {
    "forget_quality": "NeurIPS 2023 competition forget quality: mean bucket points 2^−j of each forget example's ε "
                      "(how well any threshold rule tells the method's N confidences from the reference's)",
    "final_score": "F × RA/RA_reference × TA/TA_reference",
    "avg_gap": "mean of |method − reference| over UA, RA, TA, MIA-Efficacy (points)",
    "klom_forget": "KL divergence of margins, unlearned ‖ reference, mean over forget examples (DMM paper)",
    "klom_retain": "KLOM, mean over retain examples",
    "klom_test": "KLOM, mean over test examples",
    "unlearning_accuracy": "100 − accuracy on the forget set (%)",
    "retain_accuracy": "accuracy on the retain set (%)",
    "test_accuracy": "accuracy on the test set (%)",
    "mia_efficacy": "share of forget examples an SVC on the true-class confidence calls non-members (%)",
}

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>unlearnkit classifier report — {{ task.name }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;width:100%}th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}tr.base td{color:#555;font-style:italic}
.note{color:#666;font-size:.85em}pre{background:#f7f7f7;padding:1em;overflow:auto}
svg.plot{max-width:100%;height:auto;display:block;margin:.5em 0}section{break-inside:avoid}
</style></head><body>
<h1>Classifier unlearning report</h1>
<p><b>Task:</b> {{ task.name }} ({{ task.train }} training examples: {{ task.forget }} forgotten, {{ task.retain }}
retained; {{ task.test }} test) · forget set: {{ forget_set }}<br>
<b>Model:</b> {{ model }} · recipe: {{ recipe }}<br>
<b>Ensembles:</b> N = {{ ensemble.members }} members per method (seeds {{ ensemble.seeds[0] }}..{{ ensemble.seeds[-1] }});
reference: {{ ensemble.members }} members retrained without the forget set (seeds {{ ensemble.reference_seeds[0] }}..{{
ensemble.reference_seeds[-1] }}){{ retrain_time }}<br>
<b>Time:</b> {{ seconds }} s · unlearnkit {{ version }}</p>
<h2 id="leaderboard">Leaderboard</h2>
<p class="note">Ranked by the final score, then Avg. Gap. Means over the members (F, KLOM: over forget examples);
brackets: 95% percentile-bootstrap intervals ({{ interval_note }}). F of exact retraining at this N is
the <code>retrain</code> row when it is run: with few members no method gets near 1.</p>
<table id="leaderboard-table"><tr><th>#</th><th>method</th>{% for _, head, better in columns %}<th>{{ head }}<br><span class="note">{{ better }}</span></th>{% endfor %}<th>seconds</th><th>time / retrain</th></tr>
{% for row in board %}<tr class="{{ row.css }}"><td>{{ row.rank }}</td><td>{{ row.label }}</td>{% for cell in row.cells %}<td class="num">{{ cell }}</td>{% endfor %}<td class="num">{{ row.seconds }}</td><td class="num">{{ row.fraction }}</td></tr>
{% endfor %}</table>
<h2>Per method</h2>
{% for m in methods %}<section id="method-{{ m.label }}"><h3>{{ m.label }}</h3>
<p class="note">{{ m.name }} · parameters: <code>{{ m.params }}</code> · {{ m.seconds }} s</p>
<table class="method-table"><tr><th>metric</th><th>{{ m.label }}</th><th>reference (retrained)</th><th>meaning</th></tr>
{% for r in m.rows %}<tr><td>{{ r.name }}</td><td class="num">{{ r.value }}</td><td class="num">{{ r.reference }}</td><td class="note">{{ r.meaning }}</td></tr>{% endfor %}
</table>{{ m.histogram | safe }}</section>
{% endfor %}
<h2>Configuration</h2><pre>{{ config }}</pre>
</body></html>
"""


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.{digits}f}"


def _cell(row: dict, key: str) -> str:
    digits = 1 if key in ("unlearning_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy", "avg_gap") else 3
    value = _fmt(row["aggregates"].get(key), digits)
    interval = row.get("intervals", {}).get(key)
    return value if not interval else f"{value} [{_fmt(interval[0], digits)}, {_fmt(interval[1], digits)}]"


def epsilon_histogram(label: str, epsilons: list[float], members: int) -> str:
    """The histogram of a row's per-example ε in the score's buckets (width 1/2, labelled by their lower edge), the
    0-point ones (ε ≥ ⌈ln(N−1)⌉) gathered in the last, red bar."""
    import numpy as np
    from matplotlib.figure import Figure

    top = math.ceil(math.log(members - 1))
    edges = np.arange(0, top + 1, 0.5)  # buckets [j/2, (j+1)/2) for j < 2·top, then [top, ∞)
    values = np.minimum(np.asarray(epsilons, dtype=float), top + 0.25)
    counts, _ = np.histogram(values, bins=np.append(edges, top + 0.5))
    fig = Figure(figsize=(6.4, 2.4))
    ax = fig.subplots()
    colours = ["#2ca02c"] * (len(counts) - 1) + ["#d62728"]
    ax.bar(np.append(edges, top)[:len(counts)] + 0.25, counts, width=0.45, color=colours)
    ax.set_xticks(np.append(edges, top)[:len(counts)] + 0.25,
                  [f"{e:g}" for e in edges[:len(counts) - 1]] + [f"≥{top}"])
    ax.set_xlabel(f"ε (bucket j from j/2 earns 2^−j points; ε ≥ {top}: 0 points, red)")
    ax.set_ylabel("forget examples")
    ax.set_title(f"{label}: per-example ε of the forget set", fontsize=10)
    return _svg(fig, f"eps-{label}", f"Histogram of the per-example epsilon of {label}")


def render_classifier_report(results: dict, config_text: str = "") -> str:
    members = results["ensemble"]["members"]
    reference = results["reference"]
    board = []
    for rank, label in enumerate(results["leaderboard"], start=1):
        row = results["methods"][label]
        board.append({"rank": rank, "label": label, "css": "", "cells": [_cell(row, k) for k, _, _ in COLUMNS],
                      "seconds": _fmt(row["seconds"], 1), "fraction": _fmt(row.get("time_fraction"), 2)})
    board.append({"rank": "", "label": "original (no unlearning)", "css": "base", "seconds": "0.0", "fraction": "—",
                  "cells": [_cell(results["original"], k) for k, _, _ in COLUMNS]})
    board.append({"rank": "", "label": "reference (retrained)", "css": "base", "fraction": "1.00"
                  if reference.get("retrain_seconds") else "—", "seconds": _fmt(reference.get("retrain_seconds"), 1),
                  "cells": [_cell(reference, k) if k in reference["aggregates"] else "—" for k, _, _ in COLUMNS]})
    methods = []
    for label, row in [*results["methods"].items(), ("original", {**results["original"], "name": "no unlearning",
                                                                   "params": {}, "seconds": 0.0})]:
        rows = [{"name": key, "value": _cell(row, key), "meaning": MEANINGS.get(key, ""),
                 "reference": _cell(reference, key) if key in reference["aggregates"] else "—"}
                for key in [k for k, _, _ in COLUMNS] + ["klom_retain", "klom_test"]]
        methods.append({"label": label, "name": row["name"], "params": row["params"], "seconds": _fmt(row["seconds"], 1),
                        "rows": rows, "histogram": epsilon_histogram(label, row["per_example"]["epsilon"], members)})
    ensemble = results["ensemble"]
    fraction_note = (f"; retraining took {reference['retrain_seconds']:.1f} s" if reference.get("retrain_seconds")
                     else "; read from the cache")
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(TEMPLATE).render(
        task=results["task"], forget_set=_spec(results["task"]["forget_set"]), model=_spec(results["model"]),
        recipe=_spec(results["recipe"]), ensemble=ensemble, retrain_time=fraction_note, seconds=results.get("seconds"),
        version=results.get("unlearnkit_version", "?"), columns=COLUMNS, board=board, methods=methods,
        interval_note="members for UA, RA, TA, MIA, Avg. Gap; forget examples for F and KLOM", config=config_text)


def _spec(values: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items() if v is not None)


def write_classifier_report(path: Path, results: dict, config_text: str = "") -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_classifier_report(results, config_text))
    os.replace(tmp, path)


def markdown_leaderboard(results: dict) -> str:
    """The leaderboard as a Markdown table (what the command prints): the ranked methods, then the baselines."""
    head = "| # | method | " + " | ".join(h for _, h, _ in COLUMNS) + " | seconds |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 3)]
    for rank, label in enumerate(results["leaderboard"], start=1):
        row = results["methods"][label]
        lines.append(f"| {rank} | {label} | " + " | ".join(_cell(row, k) for k, _, _ in COLUMNS)
                     + f" | {_fmt(row['seconds'], 1)} |")
    lines.append("| | original | " + " | ".join(_cell(results["original"], k) for k, _, _ in COLUMNS) + " | |")
    return "\n".join(lines)
