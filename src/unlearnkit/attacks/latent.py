"""The latent perturbation probe: the strongest ``‖δ‖₂ ≤ ε`` shift of one layer's residual stream that brings the
forget answers back.

Spec: research/metrics.md §6 ("Latent perturbation: the strongest ‖δ‖ ≤ ε perturbation of a layer's residual stream
that re-elicits the answer"). The attack is the inner loop of latent adversarial unlearning (research/methods.md §10:
"Towards Robust Knowledge Unlearning", DUA / LAU; reference code ``HongbangYuan/RobustUnlearning``
``LLaMA_Factory/src/llmtuner/train/adv_npo/trainer.py``): projected gradient descent on the forget answers' NLL with
respect to a perturbation δ added to the output of decoder block ``layer``. Used here as an evaluation: if a small δ
restores the answers, the knowledge is still in the weights and only its read-out was suppressed.

Objective, for examples (q_i, a_i), i = 1..n, and ℓ̄_i(δ) the mean NLL of the answer tokens of a_i (EOS included,
as :attr:`unlearnkit.evaluation.scoring.passes.PairScore.mean_nll`) with δ added::

    universal:    min_{‖δ‖₂ ≤ ε}  (1/n) Σ_i ℓ̄_i(δ)          one vector δ ∈ R^d for all examples
    per_example:  min_{‖δ_i‖₂ ≤ ε} ℓ̄_i(δ_i)  for each i      one vector δ_i ∈ R^d per example

**Where δ goes (chosen here).** The same vector is added to the hidden state at *every* real token position of the
sequence — prompt and answer — and not at padding; the norm is therefore the L2 norm over the hidden dimension, the
size of the shift at each position, directly comparable to :func:`residual_norm` (mean ‖h‖₂ per position). The
LAU code instead perturbs each example's whole [T × d] latent with a Frobenius-norm budget (a broadcast vector of
norm ε has Frobenius norm ε·√T there); a per-position δ is not offered. ``universal`` is the re-elicitation question
"is there one direction that brings the knowledge back"; ``per_example`` is the stronger, per-question attack.

**PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv:1706.06083, with the
L2 normalised-gradient step of the LAU code)**::

    δ ← Proj_{‖δ‖₂ ≤ ε}(δ − α · g / ‖g‖₂),   g = ∇_δ objective,   Proj(δ) = δ · min(1, ε / ‖δ‖₂)

with α = ``step_size`` · ε, default ``step_size = 2.5 / steps`` (Madry et al.'s rule, so that the boundary of the
ball is reachable from anywhere in it; the LAU code uses 1 / steps). For ``per_example`` each δ_i is normalised
and projected on its own. A zero gradient leaves δ where it is. Differences from the LAU code, on purpose: no random
start (deterministic; δ starts at 0), no clamping of the latents to the clean activations' range, and the best
iterate is kept rather than the last.

**Monotone in ε by construction.** The ε values are run in increasing order; each starts from the best δ of the
previous (smaller) ε, which is feasible for the larger ball, and the best value seen is kept (replaced only when
strictly lower). So the reported NLL is non-increasing in ε — for ``per_example``, each example's NLL is. The mean
answer probability is reported with the NLL-best δ and is not guaranteed monotone for ``universal`` (a lower mean NLL
can come with a lower mean probability).

**Recovered likelihood** (relative to the unperturbed model, ε = 0, which is always measured)::

    recovered(ε)          = P̄_ε − P̄_0,       P̄ = (1/n) Σ_i exp(−ℓ̄_i)   (TOFU's forget_Q_A_Prob)
    recovered_fraction(ε) = (P̄_ε − P̄_0) / (P_target − P̄_0)             (:func:`..relearn.recovered_fraction`)

with ``P_target`` the target (pre-unlearning) model's mean answer probability on the same examples, given by the
caller. ``relative=True`` reads each ε as a fraction of :func:`residual_norm` at that layer.

During the probe the model is in eval mode, its parameters have ``requires_grad=False`` (gradients flow only to δ),
and the hook is removed afterwards; modes, flags and weights are restored even on error.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import torch
from torch import nn

from unlearnkit.attacks.relearn import DEFAULT_TOLERANCE, Recovery, recovered_fraction
from unlearnkit.data.formatting import IGNORE_INDEX, QAFormatter, collate
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.scoring.passes import model_device

Scope = Literal["universal", "per_example"]
DEFAULT_EPSILONS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
SCOPES = ("universal", "per_example")


# ---------------------------------------------------------------------------------------------------------- pieces

def project_l2(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Euclidean projection of each row (last dimension) of ``delta`` onto the ball ``‖x‖₂ ≤ epsilon``:
    ``x · min(1, ε / ‖x‖₂)`` (rows inside the ball are returned unchanged; ε = 0 gives zeros)."""
    norms = delta.norm(dim=-1, keepdim=True)
    scale = torch.where(norms > epsilon, epsilon / norms.clamp_min(torch.finfo(delta.dtype).tiny),
                        torch.ones_like(norms))
    return delta * scale


def normalised_step(delta: torch.Tensor, grad: torch.Tensor, alpha: float) -> torch.Tensor:
    """``δ − α · g / ‖g‖₂`` row by row; rows whose gradient is exactly zero do not move."""
    norms = grad.norm(dim=-1, keepdim=True)
    direction = torch.where(norms > 0, grad / norms.clamp_min(torch.finfo(grad.dtype).tiny), torch.zeros_like(grad))
    return delta - alpha * direction


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face decoder-only model (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise UnlearnkitError(f"{type(model).__name__} has no model.model.layers: the latent probe needs a Hugging "
                              "Face decoder-only model (Llama, Qwen, SmolLM, ...)")
    return layers


def check_layer(model: nn.Module, layer: int) -> nn.Module:
    """The decoder block ``layer``; an out-of-range index raises :class:`UnlearnkitError` naming the valid range."""
    layers = decoder_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(layers):
        raise UnlearnkitError(f"layer={layer!r} is out of range: this model has {len(layers)} decoder layers, "
                              f"choose a layer in 0..{len(layers) - 1}")
    return layers[layer]


class ResidualShift:
    """What the hook adds: ``rows[b] · mask[b, t]`` at position t of batch row b (set before each forward).

    ``rows`` is [B, d]; ``mask`` is the attention mask [B, T] (1 = real token). ``captured`` keeps the block's
    output before the shift when ``capture`` is on (for :func:`residual_norm`).
    """

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.capture = False
        self.captured: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if self.capture:
            self.captured = hidden.detach()
        if self.rows is None:
            return None
        shift = self.rows[:, None, :].to(hidden.dtype) * self.mask[:, :, None].to(hidden.dtype)
        shifted = hidden + shift
        return (shifted, *output[1:]) if isinstance(output, tuple) else shifted


@contextmanager
def residual_hook(model: nn.Module, layer: int) -> Iterator[ResidualShift]:
    """Add a :class:`ResidualShift` to the output of decoder block ``layer`` (tuple outputs handled: the hidden
    state is element 0). The hook runs before any other forward hook on that block (so ``output_hidden_states``
    records the shifted state) and is removed on exit, even on error."""
    shift = ResidualShift()
    handle = check_layer(model, layer).register_forward_hook(shift, prepend=True)
    try:
        yield shift
    finally:
        handle.remove()


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on every parameter; both restored on exit, even on error."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def answer_nll_rows(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean answer NLL per row: position t−1 predicts label t; prompt and padding labels (-100) are skipped.
    Computed in float32."""
    step_logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    nll = nn.functional.cross_entropy(step_logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                      reduction="none")
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return nll.sum(dim=1) / counts


def _batches(formatter: QAFormatter, examples: Sequence[QAExample], batch_size: int, device) -> list[dict]:
    encoded = [formatter.encode(ex.question, ex.answer) for ex in examples]
    for ex, enc in zip(examples, encoded):
        if enc.prompt_length < 1 or len(enc.answer_ids) < 1:
            raise UnlearnkitError(f"question {ex.question!r} encodes to an empty prompt or answer: check the formatter")
    out = []
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], formatter.pad_token_id, padding_side="right")
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["index"] = torch.arange(start, start + batch["input_ids"].shape[0], device=device)
        out.append(batch)
    return out


def _check_common(examples: Sequence[QAExample], batch_size: int) -> None:
    if not examples:
        raise UnlearnkitError("no examples to probe: give at least one (e.g. task.eval_forget)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UnlearnkitError(f"batch_size={batch_size!r} is invalid: pass a whole number >= 1")


def residual_norm(model: nn.Module, formatter: QAFormatter, examples: Sequence[QAExample], layer: int,
                  batch_size: int = 16) -> float:
    """Mean L2 norm of the output hidden state of decoder block ``layer`` per token position, pooled over every
    real position (prompt and answer tokens, no padding) of every example: ``Σ_{i,t} ‖h_{i,t}‖₂ / Σ_i T_i``.
    The scale against which ε is read when ``relative=True``."""
    return _residual_scan(model, formatter, examples, layer, batch_size)[0]


def _residual_scan(model: nn.Module, formatter: QAFormatter, examples: Sequence[QAExample], layer: int,
                   batch_size: int) -> tuple[float, int]:
    """(:func:`residual_norm`, the hidden size d of the residual stream)."""
    _check_common(examples, batch_size)
    device = model_device(model)
    total, count, width = 0.0, 0, 0
    with frozen(model), residual_hook(model, layer) as shift, torch.no_grad():
        shift.capture = True
        for batch in _batches(formatter, examples, batch_size, device):
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            norms = shift.captured.float().norm(dim=-1)
            mask = batch["attention_mask"].bool()
            total += float(norms[mask].double().sum())
            count += int(mask.sum())
            width = shift.captured.shape[-1]
    return total / count, width


# ---------------------------------------------------------------------------------------------------------- result

@dataclass
class LatentProbeResult:
    """The probe's outcome, one entry per ε (in increasing order, absolute units).

    ``nll[k]`` = mean over examples of the answer NLL with the best δ for ``epsilons[k]``; ``prob[k]`` = mean over
    examples of exp(−NLL_i) with that δ; ``per_example_nll[k][i]`` the single examples'. ``baseline_nll`` /
    ``baseline_prob`` are the unperturbed values (ε = 0). ``delta_norm[k]`` is ‖δ‖₂ of the best δ (for
    ``per_example``: the largest over examples); ``deltas[k]`` the best δ itself, [d] (universal) or [n, d]
    (per_example), on the CPU in float32. ``history[k]`` the objective (mean NLL) at each PGD iterate.
    ``epsilon_fractions`` are the ε values as given when ``relative=True``, else ``None``.
    """

    layer: int
    scope: str
    epsilons: list[float]
    nll: list[float]
    prob: list[float]
    per_example_nll: list[list[float]]
    baseline_nll: float
    baseline_prob: float
    delta_norm: list[float]
    deltas: list[torch.Tensor]
    history: list[list[float]]
    residual_norm: float
    epsilon_fractions: list[float] | None = None
    settings: dict = field(default_factory=dict)

    @property
    def recovered(self) -> list[float]:
        """P̄_ε − P̄_0 per ε: mean answer probability gained over the unperturbed model."""
        return [p - self.baseline_prob for p in self.prob]

    def recovered_fraction(self, target_prob: float, tol: float = DEFAULT_TOLERANCE) -> list[Recovery]:
        """(P̄_ε − P̄_0) / (P_target − P̄_0) per ε, with ``target_prob`` the target model's mean answer probability on
        the same examples; undefined when the target and the unperturbed model agree within ``tol``."""
        return [recovered_fraction(p, self.baseline_prob, target_prob, tol) for p in self.prob]

    def to_dict(self, target_prob: float | None = None) -> dict:
        """JSON-ready summary (the δ vectors are left out)."""
        out = {"layer": self.layer, "scope": self.scope, "epsilons": self.epsilons,
               "epsilon_fractions": self.epsilon_fractions, "residual_norm": self.residual_norm,
               "nll": self.nll, "prob": self.prob, "baseline_nll": self.baseline_nll,
               "baseline_prob": self.baseline_prob, "recovered": self.recovered, "delta_norm": self.delta_norm,
               "history": self.history, "settings": self.settings}
        if target_prob is not None:
            out["target_prob"] = target_prob
            out["recovered_fraction"] = [r.value for r in self.recovered_fraction(target_prob)]
        return out


# ---------------------------------------------------------------------------------------------------------- probe

class _Objective:
    """Per-example answer NLLs at δ (and the gradient w.r.t. δ) over all batches, through one installed hook."""

    def __init__(self, model: nn.Module, shift: ResidualShift, batches: list[dict], group: torch.Tensor, n: int):
        self.model, self.shift, self.batches, self.group, self.n = model, shift, batches, group, n

    def __call__(self, delta: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        delta = delta.detach().requires_grad_(with_grad)
        per_example = torch.empty(self.n, dtype=torch.float32, device=delta.device)
        with torch.set_grad_enabled(with_grad):
            for batch in self.batches:
                self.shift.rows = delta[self.group[batch["index"]]]
                self.shift.mask = batch["attention_mask"]
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                rows = answer_nll_rows(logits, batch["labels"])
                per_example[batch["index"]] = rows.detach()
                if with_grad:  # d/dδ of Σ_i ℓ̄_i / n, accumulated over batches into delta.grad
                    (rows.sum() / self.n).backward()
        self.shift.rows = None
        return per_example, (delta.grad.detach().clone() if with_grad else None)


def _check_probe_args(epsilons: Sequence[float], steps: int, step_size: float | None, scope: str) -> list[float]:
    if scope not in SCOPES:
        raise UnlearnkitError(f"scope={scope!r} is unknown: choose one of {', '.join(SCOPES)}")
    values = [float(e) for e in epsilons]
    if not values or any(not math.isfinite(e) or e < 0 for e in values):
        raise UnlearnkitError(f"epsilons={list(epsilons)!r} are invalid: give at least one finite value >= 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UnlearnkitError(f"steps={steps!r} is invalid: pass a whole number >= 1")
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise UnlearnkitError(f"step_size={step_size!r} is invalid: pass a positive multiple of epsilon, or None "
                              "for 2.5/steps")
    return sorted(set(values))


def latent_probe(model: nn.Module, formatter: QAFormatter, examples: Sequence[QAExample], layer: int,
                 epsilons: Sequence[float] = DEFAULT_EPSILONS, steps: int = 20, step_size: float | None = None,
                 batch_size: int = 16, scope: Scope = "universal", relative: bool = False) -> LatentProbeResult:
    """Find, for each ε, the perturbation δ of the output of decoder block ``layer`` with ‖δ‖₂ ≤ ε that minimises
    the examples' mean answer NLL, by ``steps`` normalised-gradient PGD steps (see the module docstring).

    ``scope``: ``"universal"`` (one δ for all examples) or ``"per_example"`` (one δ per example); either way the
    vector is added at every prompt and answer position. ``step_size``: α as a multiple of ε (default
    ``2.5 / steps``). ``relative=True``: each ε is a fraction of :func:`residual_norm` at ``layer``. ε values are
    de-duplicated and run in increasing order, each warm-started from the previous one's best δ; the unperturbed
    model (ε = 0) is always measured. ``model`` is left unchanged (weights, ``requires_grad`` flags, train mode).
    """
    _check_common(examples, batch_size)
    check_layer(model, layer)
    given = _check_probe_args(epsilons, steps, step_size, scope)
    fraction = step_size if step_size is not None else 2.5 / steps
    started = time.perf_counter()
    scale, hidden = _residual_scan(model, formatter, examples, layer, batch_size)
    absolute = [e * scale for e in given] if relative else given
    device = model_device(model)
    n = len(examples)
    groups = 1 if scope == "universal" else n
    group = torch.zeros(n, dtype=torch.long, device=device) if scope == "universal" else torch.arange(n, device=device)

    def group_loss(per_example: torch.Tensor) -> torch.Tensor:
        # the objective of each δ row, in float64 and computed exactly as the reported mean NLL, so that "kept only
        # when strictly lower" makes the reported values non-increasing in ε
        values = per_example.double()
        return values.mean().reshape(1) if scope == "universal" else values

    nll, prob, per_ex, norms, deltas, history = [], [], [], [], [], []
    with frozen(model), residual_hook(model, layer) as shift:
        objective = _Objective(model, shift, _batches(formatter, examples, batch_size, device), group, n)
        delta = torch.zeros(groups, hidden, dtype=torch.float32, device=device)
        best_per_example, _ = objective(delta, with_grad=False)
        baseline = best_per_example.clone()
        best_loss, best_delta = group_loss(best_per_example), delta.clone()
        for eps in absolute:
            alpha = fraction * eps
            delta, trace = best_delta.clone(), ([] if eps > 0 else [float(baseline.double().mean())])
            for step in range(steps + 1 if eps > 0 else 0):  # ε = 0: the ball is {0}, the baseline stands
                last = step == steps
                per_example, grad = objective(delta, with_grad=not last)
                loss = group_loss(per_example)
                trace.append(float(per_example.double().mean()))
                better = loss < best_loss  # strictly lower: the warm start's value is never lost
                best_loss = torch.where(better, loss, best_loss)
                best_delta[better] = delta[better]
                best_per_example = torch.where(better[group], per_example, best_per_example)
                if not last:
                    delta = project_l2(normalised_step(delta, grad, alpha), eps)
            nll.append(float(best_per_example.double().mean()))
            prob.append(float(torch.exp(-best_per_example.double()).mean()))
            per_ex.append(best_per_example.double().cpu().tolist())
            norms.append(float(best_delta.norm(dim=-1).max()))
            deltas.append(best_delta[0].cpu().clone() if scope == "universal" else best_delta.cpu().clone())
            history.append(trace)
    settings = {"steps": steps, "step_size": fraction, "batch_size": batch_size, "scope": scope,
                "relative": relative, "examples": n, "seconds": time.perf_counter() - started,
                "positions": "prompt+answer", "init": "zero, warm-started across increasing epsilon"}
    return LatentProbeResult(
        layer=layer, scope=scope, epsilons=absolute, nll=nll, prob=prob, per_example_nll=per_ex,
        baseline_nll=float(baseline.double().mean()), baseline_prob=float(torch.exp(-baseline.double()).mean()),
        delta_norm=norms, deltas=deltas, history=history, residual_norm=scale,
        epsilon_fractions=given if relative else None, settings=settings)
