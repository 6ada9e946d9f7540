"""K-FADE: a few uphill Gauss-Newton steps on the forget loss, preconditioned by the retain set's K-FAC curvature.

Paper: "Gauss-Newton Unlearning for the LLM Era", McKinney, Thudi, Bae, Rezaei, Papernot, McIlraith and Grosse, 2026,
arXiv:2602.10568 (K-FADE: "K-FAC for Distribution Erasure"; earlier name "PB&J"). No code was found (research/methods.md
§3, and a search of the paper pages and code in Dec 2026); what the abstract states: a few uphill Gauss-Newton steps
computed with the forget set, curvature from K-FAC or EK-FAC, turning "a constraint on the model's outputs across the
entire retain set into a constraint on the model's weights", updates that can be re-applied after later fine-tuning.
Everything below that is not in that list is reconstructed [inferred] and is a typed parameter where it is a choice.

For every selected ``nn.Linear`` with weight W (out × in), one step is (uphill: L_f, the forget loss, is raised)

    vec ΔW = η · (G ⊗ A + λI)⁻¹ · vec ∇_W L_f              (damping_form="kronecker", the default)
        ΔW = η · (G + λI)⁻¹ · ∇_W L_f · (A + λI)⁻¹         (damping_form="factored", research/methods.md §3)

(vec row-major, so G ⊗ A is the layer's block of the curvature), with L_f GA's mean NLL over the forget batch's
answer tokens, λ = ``damping``, η the learning rate, and the K-FAC
factors of the retain set's output curvature (Martens & Grosse 2015; sequences as in Eschenhagen et al. 2023,
"KFAC-expand", where each token position is treated as a further example):

    A = (1/N_tok) Σ_{n,t} a_{n,t} a_{n,t}ᵀ      a: the layer's input at every non-padding position but the last
    G = (1/N_seq) Σ_{n,t} g_{n,t} g_{n,t}ᵀ      g = ∂(Σ_s −log p(ŷ_{n,s}))/∂z_{n,t}: the layer output's gradient

where ŷ are labels **sampled from the model's own predictive distribution** at every answer position
(``fisher="sampled"``: a Monte-Carlo estimate of the Fisher = the GGN of the softmax cross-entropy, ``samples``
draws per batch) or the true retain answers (``fisher="empirical"``: the empirical Fisher). A ⊗ G approximates the
Fisher F = (1/N) Σ_n E_ŷ[vec ∇ℓ_n vec ∇ℓ_nᵀ] of the summed sequence log-likelihood, block-diagonally over layers; it
is exact (in expectation over ŷ) for one sequence with one position, and in general replaces the mean of Kronecker
products by the Kronecker product of means. Since ½ΔᵀFΔ ≈ E_r KL(p_θ ‖ p_θ+Δ), the step is the ascent direction on
L_f that moves the retain outputs least (the paper's "constraint on the retain outputs").

Choices (the paper leaves them open):

- **When the factors are built.** ``prepare`` sees forget batches only, so the factors are accumulated over the first
  ``curvature_batches`` retain micro-batches that :meth:`loss` receives (one extra forward and ``samples`` backward
  passes each), then frozen. The steps taken meanwhile use the factors gathered so far (a running average, as online
  K-FAC optimizers do). The factors are method state (``state_dict``), saved with checkpoints, so a resumed run
  continues with the same curvature; with several processes they are summed across processes, so all agree.
- **Damping** (unknown in the paper). Default: λ added to the Kronecker product itself, solved exactly in the
  factors' eigenbases (Q_G [(Q_Gᵀ ∇W Q_A) / (e_G e_Aᵀ + λ)] Q_Aᵀ, no extra cost), with λ = 0.1 × the mean eigenvalue
  of G ⊗ A when ``damping`` is null: how kronfluence (pomonam/kronfluence ``arguments.py``: "0.1 x mean eigenvalues";
  Bae and Grosse are authors of both) damps its K-FAC/EK-FAC solves, and scale-free, so that η means the same on any
  model. ``damping_form="factored"`` damps each factor instead (the spec's form; λ = 0.1 × each factor's mean
  eigenvalue when null). A number sets λ absolutely in either form.
- **Which layers**: every ``nn.Linear`` whose name matches ``modules`` and not ``exclude`` (default: all but
  ``lm_head``, whose G would be vocabulary × vocabulary). Only their weights train; biases and every other parameter
  stay frozen. LoRA models are refused (the preconditioner acts on the full weight).
- **Optimizer**: the loop's optimizer receives the preconditioned direction as the gradient. With
  ``train.optimizer: {name: sgd}`` (no momentum, no weight decay) a step is exactly ΔW above with η = learning rate;
  an adaptive optimizer (the default adamw) rescales it per coordinate and is no longer a Gauss-Newton step.
  ``train.max_grad_norm`` clips the preconditioned direction.
- **Step size.** The loop's learning rate scales the step. ``kl_budget`` (off by default) instead fixes each step's
  length by the constraint the paper describes: the step is scaled so that the K-FAC model's predicted retain KL,
  ½ ΔᵀFΔ, equals ``kl_budget`` (with ``sgd`` at learning rate 1); the direction maximises the forget loss's first-order
  rise under that constraint (a natural-gradient trust-region step). It is applied to each micro-batch's step, so with
  gradient accumulation or several processes each share is scaled on its own (exact for one micro-batch per step).
- **Labels of G**: sampled by default (the true Fisher), as kronfluence's default (``use_empirical_fisher=False``).
- **EK-FAC** (George et al. 2018) is not implemented: it needs a second pass over retain data after the factors'
  eigendecomposition; only K-FAC is offered.

The update is stored: the method sets ``stores_update``, and the pipeline writes the difference between the kept
model and the target (``update.safetensors`` in the run directory, :mod:`unlearnkit.methods.updates`); ``unlearnkit
reapply RUN_DIR --model OTHER --output DIR`` adds it to another model of the same architecture.

Cost per step: 1 forward+backward on the forget batch plus one small matrix product pair per layer (in² + out²
memory per layer for the factors and their eigenbases, an eigendecomposition per layer whenever the factors change);
during the first ``curvature_batches`` steps, 1 forward and ``samples`` backward passes on the retain batch more.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import forward_logits, mean_nll
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.models.lora import is_lora


def sum_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce ``tensor`` in place with SUM when a process group of several runs (else unchanged); returns it.
    (As training/gradient_sync.py does; methods do not import the training package, which imports them.)"""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def linear_layers(model: nn.Module, modules: str, exclude: str) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules of ``model`` whose name matches ``modules`` (search) and not ``exclude``, by name."""
    inner = getattr(model, "module", model)
    chosen = {name: m for name, m in inner.named_modules() if isinstance(m, nn.Linear)
              and re.search(modules, name) and not (exclude and re.search(exclude, name))}
    return chosen


def eigenbasis(factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues ≥ 0, eigenvectors) of a symmetric positive semi-definite factor (float64 eigh, as kronfluence)."""
    eigenvalues, vectors = torch.linalg.eigh(factor.double())
    return eigenvalues.clamp_min(0), vectors


def precondition(gradient: torch.Tensor, g_basis: tuple[torch.Tensor, torch.Tensor],
                 a_basis: tuple[torch.Tensor, torch.Tensor], damping: float | None, form: str) -> torch.Tensor:
    """The damped K-FAC solve of ``gradient`` (out × in) given the eigenbases of G and A.

    ``form="kronecker"``: (G ⊗ A + λI)⁻¹ vec ∇W, exactly, in the factors' eigenbasis:
    Q_G [(Q_Gᵀ ∇W Q_A) / (e_G e_Aᵀ + λ)] Q_Aᵀ, with λ = damping or 0.1 × the mean eigenvalue of G ⊗ A.
    ``form="factored"``: (G + λI)⁻¹ ∇W (A + λI)⁻¹, with λ = damping or 0.1 × each factor's mean eigenvalue.
    """
    (g_values, g_vectors), (a_values, a_vectors) = g_basis, a_basis
    rotated = g_vectors.T @ gradient.double() @ a_vectors
    if form == "kronecker":
        product = g_values[:, None] * a_values[None, :]
        lam = 0.1 * float(product.mean()) if damping is None else damping
        scaled = rotated / (product + lam)
    else:
        g_lam = 0.1 * float(g_values.mean()) if damping is None else damping
        a_lam = 0.1 * float(a_values.mean()) if damping is None else damping
        scaled = rotated / (g_values[:, None] + g_lam) / (a_values[None, :] + a_lam)
    return (g_vectors @ scaled @ a_vectors.T).float()


def shifted_logits_and_labels(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T-1, V]`` next-token logits and ``[B, T-1]`` their labels (IGNORE_INDEX where not an answer token)."""
    return forward_logits(model, batch)[:, :-1].float(), batch["labels"][:, 1:]


def scored_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` booleans: the non-padding positions except each row's last one, whose output only predicts what
    follows the sequence (no label, so no gradient; left out so that A matches the curvature it stands for)."""
    mask = attention_mask.bool()
    last = mask & (mask.flip(1).cumsum(1).flip(1) == 1)
    return mask & ~last


def accumulate_factors(model: nn.Module, layers: dict[str, nn.Linear], batch: dict, fisher: str,
                       samples: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int, int]:
    """One retain batch's K-FAC sums: (Σ a aᵀ, Σ g gᵀ / samples) by layer, the token count, the sequence count.

    a (and g) are taken at every non-padding position but each row's last (:func:`scored_positions`); g is the gradient of the summed sampled (or, for
    ``fisher="empirical"``, true) answer-token NLL with respect to each layer's output, averaged over ``samples``
    draws of the labels from the model's own distribution. The weights' ``.grad`` is not touched.
    """
    mask = scored_positions(batch["attention_mask"])
    a_sums: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            a = inputs[0].detach().float()[mask]
            a_sums[name] = a.T @ a
            outputs[name] = output
        return hook

    handles = [layer.register_forward_hook(hook_for(name)) for name, layer in layers.items()]
    try:
        with torch.enable_grad():
            logits, labels = shifted_logits_and_labels(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    answer = labels != IGNORE_INDEX
    names = list(outputs)
    g_sums = {name: torch.zeros(layers[name].out_features, layers[name].out_features, device=logits.device)
              for name in names}
    draws = 1 if fisher == "empirical" else samples
    for draw in range(draws):
        if fisher == "empirical":
            targets = labels[answer]
        else:
            probs = torch.softmax(logits.detach()[answer], dim=-1)
            targets = torch.multinomial(probs, 1).squeeze(-1)
        nll = torch.nn.functional.cross_entropy(logits[answer], targets, reduction="sum")
        grads = torch.autograd.grad(nll, [outputs[n] for n in names], retain_graph=draw + 1 < draws)
        for name, g in zip(names, grads):
            g = g.float()[mask]
            g_sums[name] += g.T @ g / draws
    return a_sums, g_sums, int(mask.sum()), int(answer.any(dim=1).sum())


@register
class KFADE(UnlearningMethod):
    """Uphill Gauss-Newton steps on the forget NLL, preconditioned by the retain set's damped K-FAC factors."""

    name = "kfade"
    summary = ("Gauss-Newton unlearning: forget-loss ascent preconditioned by the retain set's K-FAC curvature; "
               "the update is stored and can be re-applied (unlearnkit reapply).")
    citation = ("McKinney, Thudi, Bae, Rezaei, Papernot, McIlraith and Grosse, Gauss-Newton Unlearning for the LLM "
                "Era, 2026, arXiv:2602.10568")
    uses_retain = True
    stores_update = True  # the pipeline writes update.safetensors (methods/updates.py)

    class Params(MethodParams):
        damping: float | None = Field(None, gt=0, description="lambda (unknown in the paper; larger = closer to plain "
                                                              "ascent); null: 0.1 x the mean eigenvalue (kronfluence's "
                                                              "heuristic)")
        damping_form: Literal["kronecker", "factored"] = Field(
            "kronecker", description="'kronecker': (G⊗A + λI)⁻¹ exactly in the factors' eigenbasis (kronfluence); "
                                     "'factored': (G+λI)⁻¹ ∇W (A+λI)⁻¹")
        kl_budget: float | None = Field(None, gt=0, description="when set, each micro-batch's step is scaled so that "
                                                                "its predicted retain KL, 1/2 ΔᵀFΔ with F = G⊗A, is "
                                                                "this (with sgd and learning_rate 1); null: unscaled")
        fisher: Literal["sampled", "empirical"] = Field(
            "sampled", description="labels of G: 'sampled' from the model's own predictions (Fisher = GGN, "
                                   "K-FAC's standard) or 'empirical' (the true retain answers)")
        samples: int = Field(1, ge=1, description="label draws per retain batch for fisher='sampled' (one "
                                                  "backward pass each)")
        curvature_batches: int = Field(8, ge=1, description="retain micro-batches whose factors are averaged "
                                                            "(the first ones the loss sees), then frozen")
        modules: str = Field("", description="regex (search) of the nn.Linear module names to precondition and "
                                             "train ('' = every nn.Linear)")
        exclude: str = Field("lm_head", description="regex of nn.Linear names left out ('' = none); lm_head's G "
                                                    "would be vocabulary x vocabulary")

    def __init__(self, **values):
        super().__init__(**values)
        for field in ("modules", "exclude"):
            try:
                re.compile(getattr(self, field))
            except re.error as exc:
                raise UnlearnkitError(f"kfade {field}={getattr(self, field)!r} is not a regular expression ({exc}): "
                                      "fix the pattern") from None
        self._reset()

    def _reset(self) -> None:
        self._a: dict[str, torch.Tensor] = {}
        self._g: dict[str, torch.Tensor] = {}
        self._tokens = 0
        self._sequences = 0
        self._batches = 0
        self._bases: dict[str, tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] | None = None

    def layers(self, model: nn.Module) -> dict[str, nn.Linear]:
        if is_lora(model):
            raise UnlearnkitError("kfade preconditions full weights and cannot train a LoRA model: remove model.lora")
        chosen = linear_layers(model, self.modules, self.exclude)
        if not chosen:
            raise UnlearnkitError(f"kfade: no nn.Linear of {type(model).__name__} matches modules={self.modules!r} "
                                  f"without exclude={self.exclude!r}: fix the patterns")
        return chosen

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [layer.weight for layer in self.layers(model).values()]

    def add_curvature(self, model: nn.Module, retain_batch: dict) -> None:
        """Add one retain micro-batch to the factors (summed over processes), and forget the cached eigenbases."""
        layers = {n: m for n, m in self.layers(model).items() if m.weight.requires_grad}
        a_sums, g_sums, tokens, sequences = accumulate_factors(model, layers, retain_batch, self.fisher, self.samples)
        counts = sum_across_processes(torch.tensor([tokens, sequences], dtype=torch.float64,
                                                   device=next(iter(a_sums.values())).device))
        for name in a_sums:
            a, g = sum_across_processes(a_sums[name]).cpu(), sum_across_processes(g_sums[name]).cpu()
            self._a[name] = self._a[name] + a if name in self._a else a
            self._g[name] = self._g[name] + g if name in self._g else g
        self._tokens += int(counts[0])
        self._sequences += int(counts[1])
        self._batches += 1
        self._bases = None

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The normalised factors by layer: (A, G) = (Σ a aᵀ / N_tok, Σ g gᵀ / N_seq)."""
        return {name: (self._a[name] / max(self._tokens, 1), self._g[name] / max(self._sequences, 1))
                for name in self._a}

    def bases(self) -> dict[str, tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
        """The eigendecompositions of G and A by layer, computed once per change of the factors."""
        if self._bases is None:
            self._bases = {name: (eigenbasis(g), eigenbasis(a)) for name, (a, g) in self.factors().items()}
        return self._bases

    def direction(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The forget NLL and, by layer, its damped K-FAC-preconditioned gradient (the ascent step)."""
        layers = self.layers(model)
        nll = mean_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        names = [n for n in layers if layers[n].weight.requires_grad]
        grads = torch.autograd.grad(nll, [layers[n].weight for n in names], allow_unused=True)
        bases = self.bases()
        out = {}
        for name, grad in zip(names, grads):
            if grad is None:
                continue
            g_basis, a_basis = (tuple(t.to(grad.device) for t in basis) for basis in bases[name])
            out[name] = precondition(grad, g_basis, a_basis, self.damping, self.damping_form)
        if self.kl_budget is not None and out:
            scale = (self.kl_budget / max(self.predicted_kl(out), 1e-30)) ** 0.5  # KL is quadratic in the scale
            out = {name: step * scale for name, step in out.items()}
        return nll, out

    def predicted_kl(self, steps: dict[str, torch.Tensor]) -> float:
        """½ Σ_layers vec(ΔW)ᵀ (G ⊗ A) vec(ΔW) = ½ Σ ⟨ΔW, G ΔW A⟩: the retain KL the K-FAC model predicts for ``steps``."""
        factors = self.factors()
        total = 0.0
        for name, step in steps.items():
            a, g = (f.to(step.device, torch.float64) for f in factors[name])
            total += float((step.double() * (g @ step.double() @ a)).sum())
        return 0.5 * total

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        """Value: −NLL (GA's loss); gradient with respect to each selected weight: −(G+λI)⁻¹ ∇_W NLL (A+λI)⁻¹."""
        if retain_batch is None:
            raise UnlearnkitError("kfade needs retain batches for its curvature: give the task a retain split")
        if self._batches < self.curvature_batches:
            self.add_curvature(model, retain_batch)
        nll, steps = self.direction(model, forget_batch)
        layers = self.layers(model)
        surrogate = sum((layers[name].weight * -step.to(layers[name].weight.dtype)).sum()
                        for name, step in steps.items())
        loss = -nll.detach() + (surrogate - surrogate.detach())  # value exactly -NLL, gradient -step
        return loss, {"forget_loss": -nll.item(), "forget_nll": nll.item(), "curvature_batches": float(self._batches)}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"tokens": self._tokens, "sequences": self._sequences, "batches": self._batches}
        for name in self._a:
            state[f"A/{name}"] = self._a[name]
            state[f"G/{name}"] = self._g[name]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        self._tokens, self._sequences, self._batches = (int(state["tokens"]), int(state["sequences"]),
                                                        int(state["batches"]))
        for key, value in state.items():
            if key.startswith("A/"):
                self._a[key[2:]] = value.float()
            elif key.startswith("G/"):
                self._g[key[2:]] = value.float()
