"""The report's figures, each drawn with matplotlib from results.json alone and returned as inline SVG.

One function per figure; each returns ``""`` when the run has nothing to draw (a metric not computed, no attacks).
Every SVG carries an ``id`` (``plot-<name>``) and a ``<title>`` so the page (and its tests) can find it. No script,
no network: the SVG text is the figure. Colours are the same for a model in every figure and lines also differ in
style, so a black-and-white print stays readable.

matplotlib is imported inside :func:`_figure` and :func:`_svg`, so importing this module (and ``unlearnkit --help``)
stays fast. Figures are drawn on :class:`matplotlib.figure.Figure` directly, never through pyplot: no GUI backend is
ever chosen (what the Agg backend would give, without switching the backend of a user's own session).
"""

from __future__ import annotations

import io
import logging
import math
import re
from html import escape

log = logging.getLogger("unlearnkit")
MODELS = ("unlearned", "target", "retain")
STYLE = {"unlearned": {"color": "#d62728", "linestyle": "-"}, "target": {"color": "#1f77b4", "linestyle": "--"},
         "retain": {"color": "#2ca02c", "linestyle": ":"}}
RESIST_FRACTION = 0.5  # an example resisted when the unlearned model keeps ≥ half the target's probability ...
MAX_LABELS = 10        # ... and more than the retain model gives it; at most this many are labelled
ROC_ORDER = ("mia_min_k", "mia_loss", "mia_zlib", "mia_min_k_plus_plus", "mia_reference", "mia_gradnorm")
FLOOR = 1e-12          # probabilities below are drawn at this value on the scatter's log axes


def _figure(width: float = 7.0, height: float = 3.2, ncols: int = 1):
    """A figure made without pyplot: no backend is chosen, no global figure list kept, a user's own matplotlib
    session (an interactive backend in a notebook) untouched (matplotlib's advice for web servers)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _svg(fig, name: str, title: str) -> str:
    """The figure as an SVG element with ``id="plot-<name>"`` and a ``<title>`` (no XML prolog, no fixed size)."""
    import matplotlib

    fig.tight_layout()
    buffer = io.StringIO()
    # text as <text> (searchable, printed with the reader's fonts); no date, fixed ids: the same run, the same bytes
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "unlearnkit"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.DOTALL)  # RDF namespaces: no use inline
    # ids unique on the page: every figure's internal ids (markers, clip paths) get the figure's name in front
    text = re.sub(r'id="([^"]+)"', rf'id="{name}-\1"', text)
    text = text.replace('href="#', f'href="#{name}-').replace("url(#", f"url(#{name}-")
    text = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r"<svg \1", text, count=1)
    head = f'<svg id="plot-{name}" class="plot" role="img" aria-label="{escape(title)}" '
    text = head + text[len("<svg "):]
    close = text.index(">") + 1
    return text[:close] + f"<title>{escape(title)}</title>" + text[close:]


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _per_example(models: dict, who: str, name: str) -> list:
    return models.get(who, {}).get("per_example", {}).get(name) or []


def truth_ratio_plot(models: dict) -> str:
    """Empirical CDFs of the forget truth ratios of the three models, with the KS statistic D between the unlearned
    and the retain model drawn where the two CDFs are farthest apart (forget_quality is that test's p-value)."""
    import numpy as np
    from scipy import stats

    ratios = {who: np.sort(_finite(_per_example(models, who, "forget_Truth_Ratio"))) for who in MODELS}
    if len(ratios["unlearned"]) == 0 or len(ratios["retain"]) == 0:
        return ""
    fig, (ax,) = _figure()
    for who, values in ratios.items():
        if len(values):
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=who, **STYLE[who])
    test = stats.ks_2samp(ratios["unlearned"], ratios["retain"])
    grid = np.concatenate([ratios["unlearned"], ratios["retain"]])
    cdf_u = np.searchsorted(ratios["unlearned"], grid, side="right") / len(ratios["unlearned"])
    cdf_r = np.searchsorted(ratios["retain"], grid, side="right") / len(ratios["retain"])
    at = int(np.argmax(np.abs(cdf_u - cdf_r)))
    ax.vlines(grid[at], min(cdf_u[at], cdf_r[at]), max(cdf_u[at], cdf_r[at]), color="black", linewidth=2.5)
    ax.set_title(f"KS test, unlearned vs retain (black bar): D = {test.statistic:.3f}, p = {test.pvalue:.3g}",
                 fontsize=9)
    if grid.min() > 0:
        ax.set_xscale("log")
    ax.set_xlabel("forget truth ratio R = P(wrong) / P(correct) (per example)")
    ax.set_ylabel("fraction of examples ≤ R")
    ax.legend(fontsize=8)
    return _svg(fig, "truth-ratio", "Forget-set truth ratios: unlearned vs target vs retain (KS test vs retain)")


def resisting_examples(target: list, unlearned: list, retain: list) -> list[int]:
    """Indices of forget examples the unlearning did not move: the unlearned model keeps at least
    :data:`RESIST_FRACTION` of the target's probability and more than the retain model's (when known), most
    resisting (highest unlearned/target ratio) first."""
    found = []
    for i, (t, u) in enumerate(zip(target, unlearned)):
        if t is None or u is None or t <= 0:
            continue
        r = retain[i] if i < len(retain) else None
        if u >= RESIST_FRACTION * t and (r is None or u > r):
            found.append((u / t, i))
    return [i for _, i in sorted(found, reverse=True)]


def qa_prob_scatter(models: dict) -> str:
    """Per-example forget Q_A_Prob, unlearned against target, on log axes (after unlearning the probabilities spread
    over orders of magnitude; values below :data:`FLOOR` are drawn at it); the resisting examples labelled by index."""
    target, unlearned = _per_example(models, "target", "forget_Q_A_Prob"), _per_example(models, "unlearned",
                                                                                        "forget_Q_A_Prob")
    if not target or len(target) != len(unlearned):
        return ""
    resisted = resisting_examples(target, unlearned, _per_example(models, "retain", "forget_Q_A_Prob"))
    points = {i: (max(t, FLOOR), max(u, FLOOR)) for i, (t, u) in enumerate(zip(target, unlearned))
              if t is not None and u is not None}
    if not points:
        return ""
    fig, (ax,) = _figure(5.5, 4.2)
    ax.scatter([t for t, _ in points.values()], [u for _, u in points.values()], s=14, color="#555555",
               label="forget example")
    if resisted:
        ax.scatter([points[i][0] for i in resisted], [points[i][1] for i in resisted], s=30, facecolors="none",
                   edgecolors=STYLE["unlearned"]["color"], label=f"resisted ({len(resisted)})")
    for i in resisted[:MAX_LABELS]:
        ax.annotate(str(i), points[i], xytext=(3, 3), textcoords="offset points", fontsize=7)
    low = min(v for point in points.values() for v in point)
    ax.plot([low, 1], [low, 1], color="#999999", linestyle="--", linewidth=1, label="no change")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low / 2, 1.5)
    ax.set_ylim(low / 2, 1.5)
    ax.set_xlabel("target model: P(answer | question)")
    ax.set_ylabel("unlearned model: P(answer | question)")
    ax.legend(fontsize=8, loc="upper left")
    return _svg(fig, "qa-prob-scatter", "Per-example forget Q_A_Prob: unlearned vs target (resisting examples labelled)")


def quality_utility_plot(models: dict) -> str:
    """Forget quality (log scale) against model utility for the three models, with their 95% intervals."""
    points = {}
    for who in MODELS:
        if who not in models:
            continue
        agg, iv = models[who]["aggregates"], models[who].get("intervals") or {}
        fq, mu = agg.get("forget_quality"), agg.get("model_utility")
        if fq is not None and mu is not None and fq > 0:
            points[who] = (mu, fq, iv.get("model_utility"), iv.get("forget_quality"))
    if len(points) < 2:
        return ""
    fig, (ax,) = _figure(5.5, 4.0)
    for who, (mu, fq, mu_iv, fq_iv) in points.items():
        color = STYLE[who]["color"]
        # the intervals as plain segments: a percentile-bootstrap interval of a p-value need not contain the point
        if mu_iv and None not in mu_iv:
            ax.hlines(fq, mu_iv[0], mu_iv[1], color=color, linewidth=1.5)
        if fq_iv and None not in fq_iv and fq_iv[0] > 0:  # a lower bound of 0 cannot be drawn on a log axis
            ax.vlines(mu, fq_iv[0], fq_iv[1], color=color, linewidth=1.5)
        ax.plot([mu], [fq], "o", color=color, label=who)
        ax.annotate(who, (mu, fq), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p vs retain)")
    ax.legend(fontsize=8)
    return _svg(fig, "quality-utility", "Forget quality vs model utility, with 95% intervals")


def training_plot(logs: list[dict]) -> str:
    """Training loss, learning rate and gradient norm per optimizer step."""
    panels = [(key, label) for key, label in (("loss", "loss"), ("lr", "learning rate"), ("grad_norm", "gradient norm"))
              if any(r.get(key) is not None for r in logs)]
    if not logs or not panels:
        return ""
    fig, axes = _figure(3.0 * len(panels), 2.8, ncols=len(panels))
    for ax, (key, label) in zip(axes, panels):
        rows = [(r["step"], r[key]) for r in logs if r.get(key) is not None and math.isfinite(float(r[key]))]
        ax.plot([s for s, _ in rows], [v for _, v in rows], marker="." if len(rows) < 40 else None, color="#333333")
        ax.set_xlabel("optimizer step")
        ax.set_title(label, fontsize=10)
    return _svg(fig, "training", "Training: loss, learning rate and gradient norm per step")


def monitor_plot(monitor: dict | None) -> str:
    """Each metric evaluated during training, against the step."""
    curve = (monitor or {}).get("curve") or []
    names = [k for k in curve[0] if k != "step"] if curve else []
    if not names:
        return ""
    fig, axes = _figure(3.0 * min(len(names), 3), 2.8, ncols=min(len(names), 3))
    for ax, name in zip(axes, names):
        rows = [(p["step"], p[name]) for p in curve if p.get(name) is not None]
        ax.plot([s for s, _ in rows], [v for _, v in rows], marker="o", color="#333333")
        best = (monitor or {}).get("best")
        if best and best.get("metric") == name:
            ax.axvline(best["step"], color=STYLE["unlearned"]["color"], linestyle="--", linewidth=1)
        ax.set_xlabel("optimizer step")
        ax.set_title(name, fontsize=10)
    return _svg(fig, "monitor", "Metrics evaluated during training" + (f" (first {len(axes)})" if len(names) > 3 else ""))


def relearn_plot(robustness: dict | None) -> str:
    """The relearning attack: each forget metric against the relearning steps, per model, the target's level dashed."""
    relearn = (robustness or {}).get("relearn") or {}
    curves = relearn.get("curves") or {}
    names = sorted({n for c in curves.values() for n in c.get("curve", {})})
    if not names:
        return ""
    fig, axes = _figure(3.2 * min(len(names), 3), 2.9, ncols=min(len(names), 3))
    for ax, name in zip(axes, names):
        for who, result in curves.items():
            values = result["curve"].get(name)
            if values:
                ax.plot(result["steps"], values, marker="o", label=who, **STYLE.get(who, {}))
        goal = (relearn.get("target_values") or {}).get(name)
        if goal is not None:
            ax.axhline(goal, color=STYLE["target"]["color"], linewidth=0.8, alpha=0.6)
        ax.set_xlabel("relearning step")
        ax.set_title(name, fontsize=10)
    axes[0].legend(fontsize=8)
    return _svg(fig, "relearn", "Relearning attack: forget metrics while fine-tuning on forget examples")


def latent_plot(robustness: dict | None) -> str:
    """The latent-perturbation attack: forget-answer probability against the perturbation budget ε, per model."""
    latent = (robustness or {}).get("latent") or {}
    if not latent:
        return ""
    fig, (ax,) = _figure(5.5, 3.2)
    for who, probe in latent.items():
        eps = probe.get("epsilon_fractions") or probe["epsilons"]
        ax.plot([float(e) for e in eps], probe["prob"], marker="o", label=who, **STYLE.get(who, {}))
    ax.set_xlabel("ε (fraction of the layer's mean hidden-state norm)")
    ax.set_ylabel("mean forget-answer probability")
    ax.legend(fontsize=8)
    return _svg(fig, "latent", "Latent perturbation attack: forget-answer probability per budget ε")


def mia_roc_plot(models: dict) -> str:
    """ROC curves of each membership attack telling forget (members) from holdout examples, per model.

    Orientation as :func:`unlearnkit.evaluation.metrics.mia.mia_auc`: holdout = positive, the statistic's larger
    values predict holdout, so an area of 0.5 means the attack cannot tell them apart."""
    from sklearn.metrics import roc_auc_score, roc_curve

    found = {k[:-len("_forget")] for m in models.values() for k in m.get("per_example", {})
             if k.startswith("mia_") and k.endswith("_forget") and f"{k[:-len('_forget')]}_holdout" in m["per_example"]}
    attacks = [a for a in ROC_ORDER if a in found][:4]  # the headline attack first; at most four panels
    if not attacks:
        return ""
    fig, axes = _figure(3.0 * len(attacks), 3.0, ncols=len(attacks))
    for ax, attack in zip(axes, attacks):
        for who in MODELS:
            forget, holdout = _per_example(models, who, f"{attack}_forget"), _per_example(models, who, f"{attack}_holdout")
            pairs = [(0, v) for v in _finite(forget)] + [(1, v) for v in _finite(holdout)]
            if not any(y == 0 for y, _ in pairs) or not any(y == 1 for y, _ in pairs):
                continue
            labels, scores = [y for y, _ in pairs], [v for _, v in pairs]
            fpr, tpr, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr, label=f"{who} (AUC {roc_auc_score(labels, scores):.2f})", **STYLE[who])
        ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(attack, fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    return _svg(fig, "mia-roc", "Membership inference ROC curves: forget (members) vs holdout")


def all_plots(results: dict) -> dict[str, str]:
    """Every figure the run has data for, by section name (empty figures left out). A figure that fails to draw is
    logged and left out: the report of a finished run must not be lost to a plotting error."""
    models = results.get("models", {})
    robustness = results.get("robustness")
    drawers = {"truth_ratio": lambda: truth_ratio_plot(models), "qa_prob": lambda: qa_prob_scatter(models),
               "quality_utility": lambda: quality_utility_plot(models),
               "training": lambda: training_plot((results.get("training") or {}).get("logs") or []),
               "monitor": lambda: monitor_plot(results.get("monitor")), "mia_roc": lambda: mia_roc_plot(models),
               "relearn": lambda: relearn_plot(robustness), "latent": lambda: latent_plot(robustness)}
    drawn = {}
    for name, draw in drawers.items():
        try:
            drawn[name] = draw()
        except Exception as exc:  # noqa: BLE001 - any plotting failure: keep the rest of the report
            log.warning("report figure %s could not be drawn: %s", name, exc)
    return {name: svg for name, svg in drawn.items() if svg}
