"""report.html: a page a person can read — every metric for the unlearned, target and retain models side by side,
the training curve, and sample generations on the forget set.

Self-contained (inline CSS and SVG, no scripts, no network), rendered with Jinja2 from results.json alone.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

from jinja2 import Environment, select_autoescape

from unlearnkit.config import RunConfig, dump_config

METRIC_NOTES = {
    "forget_quality": "KS-test p-value of forget truth ratios vs the retain model (higher = closer to never trained on it)",
    "forget_quality_log10": "log10 of forget_quality",
    "model_utility": "harmonic mean of the 9 retain / real-author / world-fact numbers",
    "forget_Q_A_Prob": "length-normalised probability of the forget answers",
    "forget_Q_A_ROUGE": "ROUGE-L recall of greedy answers on the forget set",
    "forget_Truth_Ratio": "mean min(R, 1/R) of the truth ratio on the forget set",
    "retain_Q_A_Prob": "probability of the retain answers",
    "retain_Q_A_ROUGE": "ROUGE-L recall on the retain set",
    "retain_Truth_Ratio": "mean max(0, 1 − R) on the retain set",
    "ra_Q_A_Prob_normalised": "normalised probability, real authors",
    "ra_Q_A_ROUGE": "ROUGE-L recall, real authors",
    "ra_Truth_Ratio": "truth ratio aggregate, real authors",
    "wf_Q_A_Prob_normalised": "normalised probability, world facts",
    "wf_Q_A_ROUGE": "ROUGE-L recall, world facts",
    "wf_Truth_Ratio": "truth ratio aggregate, world facts",
    "extraction_strength": "share of each forget answer recoverable by teacher-forced greedy prediction",
    "exact_memorization": "share of forget answer tokens predicted exactly",
    "mia_min_k": "Min-K% (k = 0.4) membership-inference AUC, forget vs holdout",
    "privleak": "relative Min-K% AUC gap to the retain model, in % (0 = ideal)",
}
HEADLINE = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "privleak")

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>unlearnkit report — {{ method.name }} on {{ task.name }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}tr.head td{font-weight:600}
.note{color:#666;font-size:.85em}.small{font-size:.85em}pre{background:#f7f7f7;padding:1em;overflow:auto}
</style></head><body>
<h1>Unlearning report</h1>
<p><b>Method:</b> {{ method.name }} — {{ method.citation }}<br>
<b>Task:</b> {{ task.name }} ({{ task.forget }} forget, {{ task.retain }} retain, {{ task.holdout }} holdout examples)<br>
<b>Training:</b> {{ training.steps }} optimizer steps · <b>time:</b> {{ seconds }} s · unlearnkit {{ version }}</p>
<h2>Metrics</h2>
<p class="note">Unlearning succeeds when the forget-set numbers of the unlearned model move from the target's to the
retain model's (the model never trained on the forget set), while model utility stays at the target's.</p>
<table><tr><th>metric</th>{% for m in columns %}<th>{{ m }}</th>{% endfor %}<th>meaning</th></tr>
{% for row in rows %}<tr class="{{ 'head' if row.headline else '' }}"><td>{{ row.name }}</td>
{% for v in row.cells %}<td class="num">{{ v }}</td>{% endfor %}<td class="note">{{ row.note }}</td></tr>{% endfor %}
</table>
{% if curve %}<h2>Training loss</h2>{{ curve | safe }}{% endif %}
{% if samples %}<h2>Forget set: sample answers</h2>
<table class="small"><tr><th>question</th><th>true answer</th>{% for m in columns %}<th>{{ m }}</th>{% endfor %}</tr>
{% for s in samples %}<tr><td>{{ s.question }}</td><td>{{ s.answer }}</td>{% for g in s.generations %}<td>{{ g }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
<h2>Configuration</h2><pre>{{ config }}</pre>
</body></html>
"""


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.3e}" if value != 0 and abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def loss_curve_svg(logs: list[dict], width: int = 700, height: int = 220) -> str:
    """An inline SVG polyline of the per-step training loss."""
    losses = [float(r["loss"]) for r in logs if "loss" in r and math.isfinite(float(r["loss"]))]
    if len(losses) < 2:
        return ""
    lo, hi = min(losses), max(losses)
    span = (hi - lo) or 1.0
    pad = 40
    pts = " ".join(
        f"{pad + i * (width - 2 * pad) / (len(losses) - 1):.1f},{height - pad - (v - lo) / span * (height - 2 * pad):.1f}"
        for i, v in enumerate(losses)
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="training loss per step">'
        f'<rect width="{width}" height="{height}" fill="#fff" stroke="#ddd"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
        f'<text x="{pad}" y="{pad - 10}" font-size="12">loss {html.escape(_fmt(hi))}</text>'
        f'<text x="{pad}" y="{height - 10}" font-size="12">min {html.escape(_fmt(lo))} · step 1 → {len(losses)}</text>'
        "</svg>"
    )


def render_report(results: dict, config_text: str = "") -> str:
    models = results.get("models", {})
    columns = [name for name in ("unlearned", "target", "retain") if name in models]
    names: list[str] = []
    for name in columns:
        names += [k for k in models[name]["aggregates"] if k not in names]
    ordered = [n for n in HEADLINE if n in names] + [n for n in names if n not in HEADLINE]
    rows = [{"name": n, "headline": n in HEADLINE, "note": METRIC_NOTES.get(n, ""),
             "cells": [_fmt(models[c]["aggregates"].get(n)) for c in columns]} for n in ordered]
    samples = []
    forget_gens = {c: models[c].get("generations", {}).get("forget", []) for c in columns}
    questions = results.get("forget_samples", [])
    for i, qa in enumerate(questions[:10]):
        samples.append({"question": qa["question"], "answer": qa["answer"],
                        "generations": [forget_gens[c][i] if i < len(forget_gens[c]) else "" for c in columns]})
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(TEMPLATE).render(
        method=results.get("method", {"name": "?", "citation": ""}), task=results.get("task", {"name": "?"}),
        training=results.get("training", {"steps": 0}), seconds=results.get("seconds", "?"),
        version=results.get("unlearnkit_version", "?"), columns=columns, rows=rows,
        curve=loss_curve_svg(results.get("training", {}).get("logs", [])), samples=samples, config=config_text)


def write_report(path: Path, results: dict, cfg: RunConfig | None = None) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_report(results, dump_config(cfg) if cfg is not None else ""))
    os.replace(tmp, path)
