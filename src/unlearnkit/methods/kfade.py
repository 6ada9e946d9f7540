"""K-FADE: a few uphill Gauss-Newton steps on the forget loss, preconditioned by the retain set's K-FAC curvature.

Paper: "Gauss-Newton Unlearning for the LLM Era" (K-FADE; earlier name "PB&J", PullBack & proJect), arXiv:2602.10568,
SaTML 2026. No code was found (research/methods.md §3); what the abstract states: a few uphill Gauss-Newton steps
computed with the forget set, curvature from K-FAC or EK-FAC, turning "a constraint on the model's outputs across the
entire retain set into a constraint on the model's weights", updates that can be re-applied after later fine-tuning.
Everything below that is not in that list is reconstructed [inferred] and is a typed parameter where it is a choice.

For every selected ``nn.Linear`` with weight W (out × in), one step is

    ΔW = η · (G + λI)⁻¹ · ∇_W L_f · (A + λI)⁻¹        (uphill: L_f is the forget loss, raised)

with L_f GA's mean NLL over the forget batch's answer tokens, λ = ``damping``, η the learning rate, and the K-FAC
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
- **Damping**: the same absolute λ on both factors, as the spec writes it (no π-split).
- **Which layers**: every ``nn.Linear`` whose name matches ``modules`` and not ``exclude`` (default: all but
  ``lm_head``, whose G would be vocabulary × vocabulary). Only their weights train; biases and every other parameter
  stay frozen. LoRA models are refused (the preconditioner acts on the full weight).
- **Optimizer**: the loop's optimizer receives the preconditioned direction as the gradient. With
  ``train.optimizer: {name: sgd}`` (no momentum, no weight decay) a step is exactly ΔW above with η = learning rate;
  an adaptive optimizer (the default adamw) rescales it per coordinate and is no longer a Gauss-Newton step.
  ``train.max_grad_norm`` clips the preconditioned direction.
- **EK-FAC** (George et al. 2018) is not implemented: it needs a second pass over retain data after the factors'
  eigendecomposition; only K-FAC is offered.

The update is stored: the method sets ``stores_update``, and the pipeline writes the difference between the kept
model and the target (``update.safetensors`` in the run directory, :mod:`unlearnkit.methods.updates`); ``unlearnkit
reapply RUN_DIR --model OTHER --output DIR`` adds it to another model of the same architecture.

Cost per step: 1 forward+backward on the forget batch plus one small matrix product pair per layer (in² + out²
memory per layer for the factors and their inverses, an eigendecomposition per layer whenever the factors change);
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


def damped_inverse(factor: torch.Tensor, damping: float) -> torch.Tensor:
    """(factor + damping·I)⁻¹ of a symmetric positive semi-definite factor, by its eigendecomposition."""
    eigenvalues, vectors = torch.linalg.eigh(factor.double())
    return ((vectors / (eigenvalues.clamp_min(0) + damping)) @ vectors.T).float()


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


def preconditioned(gradient: torch.Tensor, g_inverse: torch.Tensor, a_inverse: torch.Tensor) -> torch.Tensor:
    """(G + λI)⁻¹ · ∇W · (A + λI)⁻¹ (the inverses given)."""
    return g_inverse @ gradient.float() @ a_inverse


@register
class KFADE(UnlearningMethod):
    """Uphill Gauss-Newton steps on the forget NLL, preconditioned by the retain set's damped K-FAC factors."""

    name = "kfade"
    summary = ("Gauss-Newton unlearning: forget-loss ascent preconditioned by the retain set's K-FAC curvature; "
               "the update is stored and can be re-applied (unlearnkit reapply).")
    citation = "Gauss-Newton Unlearning for the LLM Era (K-FADE, earlier PB&J), 2026, arXiv:2602.10568"
    uses_retain = True
    stores_update = True  # the pipeline writes update.safetensors (methods/updates.py)

    class Params(MethodParams):
        damping: float = Field(1e-3, gt=0, description="lambda: added to both Kronecker factors before inversion "
                                                       "(unknown in the paper; larger = closer to plain ascent)")
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
        self._inverses: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

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
        """Add one retain micro-batch to the factors (summed over processes), and forget the cached inverses."""
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
        self._inverses = None

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The normalised factors by layer: (A, G) = (Σ a aᵀ / N_tok, Σ g gᵀ / N_seq)."""
        return {name: (self._a[name] / max(self._tokens, 1), self._g[name] / max(self._sequences, 1))
                for name in self._a}

    def inverses(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(G + λI)⁻¹, (A + λI)⁻¹ by layer, computed once per change of the factors."""
        if self._inverses is None:
            self._inverses = {name: (damped_inverse(g, self.damping), damped_inverse(a, self.damping))
                              for name, (a, g) in self.factors().items()}
        return self._inverses

    def direction(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The forget NLL and, by layer, the preconditioned gradient (G+λI)⁻¹ ∇_W NLL (A+λI)⁻¹ (the ascent step)."""
        layers = self.layers(model)
        nll = mean_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        names = [n for n in layers if layers[n].weight.requires_grad]
        grads = torch.autograd.grad(nll, [layers[n].weight for n in names], allow_unused=True)
        inverses = self.inverses()
        out = {}
        for name, grad in zip(names, grads):
            if grad is None:
                continue
            g_inv, a_inv = inverses[name]
            out[name] = preconditioned(grad, g_inv.to(grad.device), a_inv.to(grad.device))
        return nll, out

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
