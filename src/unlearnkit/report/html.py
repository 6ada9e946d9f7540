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
from unlearnkit.evaluation.metrics import registry

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
<p class="note">Brackets: 95% percentile-bootstrap confidence interval over the evaluation examples.
Unlearning succeeds when the forget-set numbers of the unlearned model move from the target's to the
retain model's (the model never trained on the forget set), while model utility stays at the target's.</p>
<table><tr><th>metric</th>{% for m in columns %}<th>{{ m }}</th>{% endfor %}<th>meaning</th></tr>
{% for row in rows %}<tr class="{{ 'head' if row.headline else '' }}"><td>{{ row.name }}</td>
{% for v in row.cells %}<td class="num">{{ v }}</td>{% endfor %}<td class="note">{{ row.note }}</td></tr>{% endfor %}
</table>
{% if curve %}<h2>Training loss</h2>{{ curve | safe }}{% endif %}
{% if monitor_plots %}<h2>Evaluation during training</h2>
{% if selection %}<p>{{ selection }}</p>{% endif %}
{% for svg in monitor_plots %}{{ svg | safe }}{% endfor %}{% endif %}
{% if samples %}<h2>Forget set: sample answers</h2>
<table class="small"><tr><th>question</th><th>true answer</th>{% for m in columns %}<th>{{ m }}</th>{% endfor %}</tr>
{% for s in samples %}<tr><td>{{ s.question }}</td><td>{{ s.answer }}</td>{% for g in s.generations %}<td>{{ g }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
{% if representation %}<h2>Representations</h2>{{ representation | safe }}{% endif %}
{% if robustness %}<h2>Robustness: does the forgotten knowledge come back?</h2>{{ robustness | safe }}{% endif %}
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


def _cell(model: dict, name: str) -> str:
    """The aggregate with its 95% bootstrap interval underneath, when there is one."""
    value = _fmt(model["aggregates"].get(name))
    interval = (model.get("intervals") or {}).get(name)
    return value if not interval else f"{value} [{_fmt(interval[0])}, {_fmt(interval[1])}]"


def line_svg(steps: list[float], values: list[float], label: str, width: int = 700, height: int = 220) -> str:
    """An inline SVG polyline of ``values`` against ``steps`` (non-finite and missing values are left out)."""
    points = [(x, float(v)) for x, v in zip(steps, values) if v is not None and math.isfinite(float(v))]
    if len(points) < 2:
        return ""
    x_lo, x_hi = points[0][0], points[-1][0]
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    x_span, span, pad = (x_hi - x_lo) or 1.0, (hi - lo) or 1.0, 40
    pts = " ".join(f"{pad + (x - x_lo) / x_span * (width - 2 * pad):.1f},"
                   f"{height - pad - (v - lo) / span * (height - 2 * pad):.1f}" for x, v in points)
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(label)} per step">'
        f'<rect width="{width}" height="{height}" fill="#fff" stroke="#ddd"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
        f'<text x="{pad}" y="{pad - 10}" font-size="12">{html.escape(label)}: max {html.escape(_fmt(hi))}</text>'
        f'<text x="{pad}" y="{height - 10}" font-size="12">min {html.escape(_fmt(lo))} · step {x_lo:g} → {x_hi:g}</text>'
        "</svg>"
    )


def loss_curve_svg(logs: list[dict]) -> str:
    """The per-step training loss."""
    return line_svg([r["step"] for r in logs], [r.get("loss") for r in logs], "training loss")


def monitor_svgs(monitor: dict | None) -> list[str]:
    """One plot per metric evaluated during training."""
    curve = (monitor or {}).get("curve") or []
    names = [k for k in curve[0] if k != "step"] if curve else []
    return [svg for name in names if (svg := line_svg([p["step"] for p in curve], [p.get(name) for p in curve], name))]


def _forget_generations(model: dict) -> list[str]:
    """A model's answers to the forget questions: TOFU's forget split, or MUSE's KnowMem forget questions."""
    generations = model.get("generations", {})
    return generations.get("forget", generations.get("knowmem_f", []))


def _meaning(name: str) -> str:
    declared = registry.metric(name)
    return declared.meaning if declared is not None else ""


def render_report(results: dict, config_text: str = "") -> str:
    models = results.get("models", {})
    columns = [name for name in ("unlearned", "target", "retain") if name in models]
    names: list[str] = []
    for name in columns:
        names += [k for k in models[name]["aggregates"] if k not in names]
    headline = registry.headline()  # the metric table says what is headline and what each metric means
    ordered = [n for n in headline if n in names] + [n for n in names if n not in headline]
    rows = [{"name": n, "headline": n in headline, "note": _meaning(n),
             "cells": [_cell(models[c], n) for c in columns]} for n in ordered]
    samples = []
    forget_gens = {c: _forget_generations(models[c]) for c in columns}
    questions = results.get("forget_samples", [])
    for i, qa in enumerate(questions[:10]):
        samples.append({"question": qa["question"], "answer": qa["answer"],
                        "generations": [forget_gens[c][i] if i < len(forget_gens[c]) else "" for c in columns]})
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(TEMPLATE).render(
        method=results.get("method", {"name": "?", "citation": ""}), task=results.get("task", {"name": "?"}),
        training=results.get("training", {"steps": 0}), seconds=results.get("seconds", "?"),
        version=results.get("unlearnkit_version", "?"), columns=columns, rows=rows,
        curve=loss_curve_svg(results.get("training", {}).get("logs", [])), samples=samples, config=config_text,
        monitor_plots=monitor_svgs(results.get("monitor")), selection=_selection_text(results.get("monitor")),
        robustness=robustness_html(results.get("robustness")),
        representation=representation_html(results.get("representation")))


def representation_html(representation: dict | None) -> str:
    """CKA against the retain model and forget-vs-other separability, unlearned beside target."""
    if not representation:
        return ""
    columns = [who for who in ("unlearned", "target") if who in representation]
    names = sorted({n for who in columns for n in representation[who]})
    rows = "".join(f"<tr><td>{html.escape(n)}</td>" + "".join(
        f"<td class='num'>{_fmt(representation[who].get(n))}</td>" for who in columns) + "</tr>" for n in names)
    return (f"<p class='note'>Mean-pooled hidden states at layer {representation['layer']} ({representation['pool']} "
            "tokens). cka_*: similarity to the retain model's representation (1 = same up to rotation and scale); "
            "*_forget_vs_*: how well a k-NN / linear probe tells forget examples from the others (compare with the "
            "retain model's and with chance).</p><table><tr><th>metric</th>"
            + "".join(f"<th>{who}</th>" for who in columns) + "</tr>" + rows + "</table>")


def robustness_html(robustness: dict | None) -> str:
    """Tables of the attacks: relearning's recovered fractions, and each quantization scheme's metrics."""
    if not robustness:
        return ""
    parts = []
    relearn = robustness.get("relearn")
    if relearn:
        s = relearn.get("settings", {})
        parts.append(f"<h3>Relearning</h3><p class='note'>Fine-tuned on {s.get('examples', '?')} forget examples for "
                     f"{s.get('steps', '?')} steps (lr {s.get('learning_rate', '?')}). Recovered fraction = "
                     "(after − before) / (target − before): 0 = nothing came back, 1 = back to the target. The retain "
                     "model (never trained on the forget set) is the honest baseline; the control relearns the "
                     "unlearned model on retain examples.</p>")
        rows = []
        blocks = dict(relearn["recovered_fraction"])
        if relearn.get("control"):
            blocks["unlearned (control: retain examples)"] = relearn["control"]["recovered_fraction"]["unlearned"]
        for who, metrics in blocks.items():
            for name, v in metrics.items():
                fraction = v["reason"] if v["value"] is None else _fmt(v["value"])
                rows.append(f"<tr><td>{html.escape(who)}</td><td>{html.escape(name)}</td><td class='num'>"
                            f"{_fmt(v['before'])}</td><td class='num'>{_fmt(v['after'])}</td><td class='num'>"
                            f"{_fmt(v['target'])}</td><td class='num'>{html.escape(fraction)}</td></tr>")
        parts.append("<table><tr><th>model</th><th>metric</th><th>before</th><th>after</th><th>target</th>"
                     "<th>recovered</th></tr>" + "".join(rows) + "</table>")
    quantize = robustness.get("quantize")
    if quantize:
        names = sorted({n for schemes in quantize.values() for r in schemes.values() for n in r["aggregates"]})
        header = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        rows = []
        for who, schemes in quantize.items():
            for scheme, r in schemes.items():
                cells = "".join(f"<td class='num'>{_fmt(r['aggregates'].get(n))}</td>" for n in names)
                rows.append(f"<tr><td>{html.escape(who)}</td><td>{html.escape(r['description'])}</td>{cells}</tr>")
        parts.append("<h3>Quantization</h3><p class='note'>Each model reloaded at each scheme (bitsandbytes) and "
                     "re-evaluated: forgetting and utility together.</p><table><tr><th>model</th><th>precision</th>"
                     + header + "</tr>" + "".join(rows) + "</table>")
    suffix = robustness.get("suffix")
    if suffix:
        search = suffix["search"]
        parts.append(f"<h3>Adversarial suffix (GCG)</h3><p class='note'>Universal suffix "
                     f"<code>{html.escape(search['suffix_text'])}</code> optimised on the {suffix['optimised_on']} "
                     f"model (answer NLL {_fmt(search['nll_before'])} → {_fmt(search['nll_after'])}); every model "
                     "evaluated with it after each forget question, and with the paraphrased questions.</p>")
        names = sorted({n for r in suffix["models"].values() for part in r.values() for n in part})
        rows = "".join(f"<tr><td>{html.escape(who)}</td><td>{what}</td>" + "".join(
            f"<td class='num'>{_fmt(r[what].get(n))}</td>" for n in names) + "</tr>"
            for who, r in suffix["models"].items() for what in ("with_suffix", "paraphrased"))
        parts.append("<table><tr><th>model</th><th>prompt</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names)
                     + "</tr>" + rows + "</table>")
    latent = robustness.get("latent")
    if latent:
        parts.append("<h3>Latent perturbation</h3><p class='note'>Mean forget-answer probability with the strongest "
                     "residual-stream shift of norm ≤ ε found by projected gradient steps (ε relative to the layer's "
                     "mean hidden-state norm). The retain model shows what any model reaches with such a shift.</p>")
        for who, probe in latent.items():
            eps = probe.get("epsilon_fractions") or probe["epsilons"]
            head = "".join(f"<th>ε={_fmt(float(e))}</th>" for e in eps)
            fractions = probe.get("recovered_fraction")
            row = "".join(f"<td class='num'>{_fmt(p)}</td>" for p in probe["prob"])
            frac_row = ("<tr><td>recovered fraction</td>" + "".join(f"<td class='num'>{_fmt(f)}</td>" for f in fractions)
                        + "</tr>") if fractions else ""
            parts.append(f"<p><b>{html.escape(who)}</b> (layer {probe['layer']})</p><table><tr><th></th>{head}</tr>"
                         f"<tr><td>forget answer probability</td>{row}</tr>{frac_row}</table>")
    return "".join(parts)


def _selection_text(monitor: dict | None) -> str:
    if not monitor or "best" not in monitor:
        return ""
    best = monitor.get("best")
    if not best:
        return monitor.get("note", "")
    return (f"Kept the checkpoint of step {best['step']}: the best {best['metric']} "
            f"({_fmt(best['value'])}) among evaluated checkpoints meeting the bounds.")


def write_report(path: Path, results: dict, cfg: RunConfig | None = None) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_report(results, dump_config(cfg) if cfg is not None else ""))
    os.replace(tmp, path)
