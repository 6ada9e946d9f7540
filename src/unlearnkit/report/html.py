"""report.html: a page a person can read — a verdict line, the figures (report/plots.py), every metric for the
unlearned, target and retain models side by side, sample generations on the forget set, and the audit record.

Self-contained (inline CSS and SVG, no scripts, no network), rendered with Jinja2 from results.json (and the run's
audit.json, when there is one) alone.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from jinja2 import Environment, select_autoescape

from unlearnkit.config import RunConfig, dump_config
from unlearnkit.evaluation.metrics import registry
from unlearnkit.report.plots import all_plots
from unlearnkit.report.verdict import RULE, verdict

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>unlearnkit report — {{ method.name }} on {{ task.name }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}tr.head td{font-weight:600}
.note{color:#666;font-size:.85em}.small{font-size:.85em}pre{background:#f7f7f7;padding:1em;overflow:auto}
svg.plot{max-width:100%;height:auto;display:block;margin:.5em 0}figure{margin:1em 0;break-inside:avoid}
.verdict{font-size:1.1em;border-left:4px solid #444;padding:.4em .8em;background:#f7f7f7}code{word-break:break-all}
@media print{body{max-width:none;margin:0}svg.plot,table,pre{break-inside:avoid}h2{break-after:avoid}}
</style></head><body>
<h1>Unlearning report</h1>
{% if verdict %}<p class="verdict" id="verdict">{{ verdict }}</p><p class="note">{{ verdict_rule }}</p>{% endif %}
<p><b>Method:</b> {{ method.name }} — {{ method.citation }}<br>
<b>Task:</b> {{ task.name }} ({{ task.forget }} forget, {{ task.retain }} retain, {{ task.holdout }} holdout examples)<br>
<b>Training:</b> {{ training.steps }} optimizer steps · <b>time:</b> {{ seconds }} s · unlearnkit {{ version }}</p>
{% if flexora %}<p id="flexora"><b>LoRA layers (Flexora):</b> {{ flexora }}</p>{% endif %}
<h2>Metrics</h2>
<p class="note">Brackets: 95% percentile-bootstrap confidence interval over the evaluation examples.
Unlearning succeeds when the forget-set numbers of the unlearned model move from the target's to the
retain model's (the model never trained on the forget set), while model utility stays at the target's.</p>
{% for name, caption in figures %}<figure>{{ plots[name] | safe }}<figcaption class="note">{{ caption }}</figcaption></figure>
{% endfor %}
<table><tr><th>metric</th>{% for m in columns %}<th>{{ m }}</th>{% endfor %}<th>meaning</th></tr>
{% for row in rows %}<tr class="{{ 'head' if row.headline else '' }}"><td>{{ row.name }}</td>
{% for v in row.cells %}<td class="num">{{ v }}</td>{% endfor %}<td class="note">{{ row.note }}</td></tr>{% endfor %}
</table>
{% if plots.training %}<h2>Training</h2>{{ plots.training | safe }}{% endif %}
{% if plots.monitor %}<h2>Evaluation during training</h2>
{% if selection %}<p>{{ selection }}</p>{% endif %}
{{ plots.monitor | safe }}{% endif %}
{% if samples %}<h2>Forget set: sample answers</h2>
<table class="small"><tr><th>question</th><th>true answer</th>{% for m in columns %}<th>{{ m }}</th>{% endfor %}</tr>
{% for s in samples %}<tr><td>{{ s.question }}</td><td>{{ s.answer }}</td>{% for g in s.generations %}<td>{{ g }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
{% if representation %}<h2>Representations</h2>{{ representation | safe }}{% endif %}
{% if robustness %}<h2>Robustness: does the forgotten knowledge come back?</h2>
{% if plots.relearn %}{{ plots.relearn | safe }}{% endif %}{% if plots.latent %}{{ plots.latent | safe }}{% endif %}
{{ robustness | safe }}{% endif %}
{% if audit %}<h2>Audit record</h2>{{ audit | safe }}{% endif %}
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


def _forget_generations(model: dict) -> list[str]:
    """A model's answers to the forget questions: TOFU's forget split, or MUSE's KnowMem forget questions."""
    generations = model.get("generations", {})
    return generations.get("forget", generations.get("knowmem_f", []))


def _meaning(name: str) -> str:
    declared = registry.metric(name)
    return declared.meaning if declared is not None else ""


FIGURES = (  # (plot, caption) shown under the metrics' heading, in this order
    ("truth_ratio", ("Forget quality made visible: the cumulative distributions of the per-example forget truth "
                     "ratios; the black bar is the KS statistic D between the unlearned and the retain model, whose "
                     "p-value is forget_quality.")),
    ("qa_prob", ("Each forget example's answer probability before (target) and after unlearning. Resisted (labelled "
                 "by index in the forget split): the unlearned model keeps at least half the target's probability and "
                 "more than the retain model gives that answer.")),
    ("quality_utility", ("Where each model sits on the forget-quality / utility plane (bars: 95% bootstrap intervals; "
                         "the retain model's forget quality is 1 by definition).")),
    ("mia_roc", ("Membership-inference attacks telling forget examples from unseen holdout ones: the closer the "
                 "unlearned model's curve to the retain model's, the less the forget set still shows.")),
)


def render_report(results: dict, config_text: str = "", audit: dict | None = None) -> str:
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
    plots = all_plots(results)
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(TEMPLATE).render(
        method=results.get("method", {"name": "?", "citation": ""}), task=results.get("task", {"name": "?"}),
        training=results.get("training", {"steps": 0}), seconds=results.get("seconds", "?"),
        version=results.get("unlearnkit_version", "?"), columns=columns, rows=rows,
        plots=plots, figures=[(n, c) for n, c in FIGURES if n in plots], samples=samples, config=config_text,
        verdict=verdict(models), verdict_rule=RULE, audit=audit_html(audit),
        selection=_selection_text(results.get("monitor")),
        flexora=flexora_text(results.get("flexora")),
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


def flexora_text(flexora: dict | None) -> str:
    """The layers Flexora's search kept and every layer's final gate (results.json: flexora; models/flexora.py)."""
    if not flexora:
        return ""
    gates = ", ".join(f"{i}: {_fmt(g)}" for i, g in enumerate(flexora["gates"]))
    chosen = ", ".join(str(i) for i in flexora["layers"])
    return (f"{chosen} ({len(flexora['layers'])} of {flexora['of']}), chosen by {flexora['settings']['select']} "
            f"after {flexora['settings']['search_steps']} search iterations; final gates {gates}")


def _selection_text(monitor: dict | None) -> str:
    if not monitor or "best" not in monitor:
        return ""
    best = monitor.get("best")
    if not best:
        return monitor.get("note", "")
    return (f"Kept the checkpoint of step {best['step']}: the best {best['metric']} "
            f"({_fmt(best['value'])}) among evaluated checkpoints meeting the bounds.")


def audit_html(audit: dict | None) -> str:
    """The audit record as tables: digests, versions, seed, hardware, times (``unlearnkit verify`` re-checks them)."""
    if not audit:
        return ""
    rows = [("resolved config", audit["config"]["file"], audit["config"]["sha256"])]
    rows += [("data file", path, digest) for path, digest in audit["data"]["files"].items()]
    rows += [(f"{split} examples", f"{e['count']} examples", e["sha256"]) for split, e in audit["data"]["examples"].items()
             if e["count"]]
    for role, entry in audit["models"].items():
        if entry is not None:
            rows += [(f"{role} weights", f"{entry['path']}/{name}", digest) for name, digest in entry["weights"].items()]
    hashes = "".join(f"<tr><td>{html.escape(a)}</td><td class='small'>{html.escape(b)}</td><td><code class='small'>"
                     f"{html.escape(c)}</code></td></tr>" for a, b, c in rows)
    versions = ", ".join(f"{k} {v}" for k, v in audit["versions"].items() if v)
    hw = audit["hardware"]
    machine = (f"{hw['platform']}, {hw['cpu_count']} CPUs, GPUs: {', '.join(hw['gpus']) or 'none'}, "
               f"{hw['processes']} process(es)")
    facts = [("started", audit["started"]), ("finished", audit["finished"]), ("seed", str(audit["seed"])),
             ("git commit", _commit_text(audit.get("git_commit"))),
             ("hardware", machine), ("versions", versions)]
    return ("<p class='note'>SHA-256 digests written in audit.json when the run finished; <code>unlearnkit verify "
            "RUN_DIR</code> re-hashes every file, re-evaluates the unlearned model on the forget set and names any "
            "mismatch.</p><table class='small'>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td>"
                                                            "</tr>" for k, v in facts) + "</table>"
            "<table><tr><th>what</th><th>file</th><th>SHA-256</th></tr>" + hashes + "</table>")


def _commit_text(git: dict | None) -> str:
    if not git:
        return "unknown (not run from a git checkout)"
    return git["commit"] + (" with uncommitted changes" if git.get("dirty") else "")


def write_report(path: Path, results: dict, cfg: RunConfig | None = None, audit: dict | None = None) -> None:
    """Write report.html (the audit record is read from audit.json beside it when not given)."""
    path = Path(path)
    if audit is None and (path.parent / "audit.json").exists():
        audit = json.loads((path.parent / "audit.json").read_text())
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_report(results, dump_config(cfg) if cfg is not None else "", audit))
    os.replace(tmp, path)
