"""The report's verdict line: in words, how close the unlearned model is to the retain model and what it cost.

The rule (also printed under the verdict):

- **closeness**, with a retain model: forget_quality (TOFU) is the p-value of the KS test between the unlearned and
  the retain model's forget truth ratios; p ≥ 0.05 ("the test cannot tell them apart at the 5% level", the TOFU
  paper's reading) is *indistinguishable from the retain model*, otherwise *distinguishable*. Each headline metric
  whose goal is the retain model's value (forget_Q_A_Prob, knowmem_f, ...) also gets the fraction of the
  target → retain gap the unlearning closed, (target − unlearned) / (target − retain): 100% = at the retain model,
  0% = unchanged, above 100% = past it. It is left out when the retain model's value lies inside the target's 95%
  interval: the two do not measurably differ, and the ratio of two tiny differences says nothing.
- **cost**: model utility (TOFU's model_utility, MUSE's knowmem_r) relative to the target's,
  (unlearned − target) / target; a drop of at most 5% reads as *kept utility*.
"""

from __future__ import annotations

from unlearnkit.evaluation.metrics import registry

FQ_THRESHOLD = 0.05
KEPT_UTILITY = 0.05
UTILITY = ("model_utility", "knowmem_r")
RULE = (f"Rule: forget quality p ≥ {FQ_THRESHOLD} = indistinguishable from the retain model (KS test at the 5% "
        "level); gap closed = (target − unlearned) / (target − retain) for each headline metric whose goal is the "
        f"retain model's value; utility cost = relative change of model utility vs the target, ≤ {KEPT_UTILITY:.0%} "
        "drop = kept.")


def _agg(models: dict, who: str, name: str):
    return models.get(who, {}).get("aggregates", {}).get(name)


def gap_closed(target: float | None, unlearned: float | None, retain: float | None) -> float | None:
    """(target − unlearned) / (target − retain); None when undefined (missing value, or target = retain)."""
    if None in (target, unlearned, retain) or target == retain:
        return None
    return (target - unlearned) / (target - retain)


def closeness(models: dict) -> list[str]:
    parts = []
    fq = _agg(models, "unlearned", "forget_quality")
    if fq is not None:
        verdict = "indistinguishable from" if fq >= FQ_THRESHOLD else "distinguishable from"
        parts.append(f"its forget-set truth ratios are {verdict} the retain model's (forget quality p = {fq:.3g}"
                     + (f"; the target's p = {t:.3g}" if (t := _agg(models, "target", "forget_quality")) is not None
                        else "") + ")")
    gaps, unresolved = [], []
    for name in registry.headline():
        metric = next((m for s in ("tofu", "muse") if (m := registry.metric(name, s)) is not None), None)
        if metric is None or metric.better != "retain" or metric.interval == "auc":
            continue
        target, unlearned, retain = (_agg(models, who, name) for who in ("target", "unlearned", "retain"))
        interval = (models["target"].get("intervals") or {}).get(name)
        if retain is not None and interval and None not in interval and interval[0] <= retain <= interval[1]:
            unresolved.append(name)
            continue
        closed = gap_closed(target, unlearned, retain)
        if closed is not None:
            gaps.append(f"{closed:.0%} on {name}")
    if gaps:
        parts.append("it closed the gap from the target to the retain model by " + ", ".join(gaps))
    if unresolved:
        parts.append("the target and retain models do not measurably differ on " + ", ".join(unresolved)
                     + " (the retain model's value is inside the target's 95% interval)")
    return parts


def cost(models: dict) -> str | None:
    for name in UTILITY:
        u, t = _agg(models, "unlearned", name), _agg(models, "target", name)
        if u is None or t is None:
            continue
        if t == 0:
            return f"has {name} {u:.3g}; its relative cost is undefined, the target's {name} being 0"
        change = (u - t) / t
        words = "kept utility" if change >= -KEPT_UTILITY else f"cost {-change:.1%} of utility"
        return f"{words}: {name} {u:.3g} vs the target's {t:.3g} ({change:+.1%})"
    return None


def verdict(models: dict) -> str:
    """One sentence (or ``""`` when there is no retain or target model to compare with)."""
    if "unlearned" not in models or "target" not in models:
        return ""
    parts = closeness(models) if "retain" in models else []
    spent = cost(models)
    if not parts and spent is None:
        return ""
    head = "; ".join(parts) if parts else "no retain model to compare with"
    return f"The unlearned model: {head}" + (f"; it {spent}." if spent else ".")
