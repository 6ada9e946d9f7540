"""Latent Adversarial Unlearning (LAU): AdvNPO and AdvGA unlearn against a latent perturbation that re-elicits the
forget answers.

Paper: "Towards Robust Knowledge Unlearning: An Adversarial Framework for Assessing and Improving Unlearning
Robustness in Large Language Models", Yuan et al., 2024, arXiv:2408.10682. Reference code:
HongbangYuan/RobustUnlearning, ``LLaMA_Factory/src/llmtuner/train/adv_npo/trainer.py`` (research/methods.md §10).

A saddle-point problem: ``max_θ E_{D_f} [ min_{‖δ‖ ≤ ε} L(π_θ2(π_θ1(x) + δ), y) ]``. Per step:

1. **Inner attack** (PGD on the residual stream, the model in eval mode): δ is added to the hidden states entering
   decoder layer ``perturb_layer`` (0 would be the embeddings; the paper uses 4 and reports that shallow layers work
   best). δ starts at a random direction with radius U(0, 1)·ε per example (the L2 norm over the example's whole
   [T × d] latent); each of ``steps`` steps moves δ by −(ε/steps)·g/‖g‖ (g = ∇_δ of the batch's mean answer NLL,
   normalised per example: gradient *descent* on the forget NLL, the perturbation that best brings the answers
   back), then projects δ into the ε-ball and clamps the perturbed latents to [min, max] of the clean ones (one
   min and max over the batch, as the reference).
2. **Outer step** on the forward with δ fixed (detached):
   - AdvNPO: ``L = forget_weight · (−2/β) · mean log σ(−β (log π_θ(y|x; δ) − log π_ref(y|x))) + retain term``, the
     reference log-probabilities unperturbed (precomputed in ``prepare`` as for NPO), the retain term on the clean
     forward (``npo_grad_diff``: retain NLL; ``npo_KL``: KL to the frozen model);
   - AdvGA: ``L = −meanNLL(D_f; δ)`` (+ an optional retain term).

Defaults: ε = 8 (the reference scripts'; its argument default 0 switches the attack off), 6 inner steps, layer 4,
β = 0.1, retain NLL with forget and retain weights 1 (the paper: equal weights). Not carried over: the reference's
optional ``std_normalization`` (a per-dimension rescaling of δ; off here) and its Q/K/V perturbation targets (the
residual stream only). Randomness (δ's start) comes from torch's generator, which the training loop reseeds from
(seed, step, micro-batch), so runs and resumes are reproducible.

Cost: (steps + 1) forward+backward passes on the forget batch (the attack's backward passes reach δ only: the
parameters' gradients are not kept) + the retain forward+backward: about 7–8× gradient ascent with the defaults.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from pydantic import Field
from torch import nn

from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.losses import forward_logits, mean_nll, sequence_nll
from unlearnkit.methods.npo import NPO, npo_loss
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.reference_logprobs import lookup_reference
from unlearnkit.methods.registry import register
from unlearnkit.methods.retain_regularised import ForgetWeight, RetainLoss, RetainRegularised, RetainWeight
from unlearnkit.methods.rmu import decoder_layers


@contextmanager
def added_to_layer_input(layer: nn.Module, delta: torch.Tensor | None, captured: list | None = None) -> Iterator[None]:
    """While inside, ``layer`` sees ``hidden_states + delta`` (``delta`` None: unchanged); ``captured`` receives the
    clean hidden states it was given."""

    def hook(module, args, kwargs):
        positional = bool(args)
        hidden = args[0] if positional else kwargs["hidden_states"]
        if captured is not None:
            captured.append(hidden.detach())
        if delta is None:
            return None
        hidden = hidden + delta.to(hidden.dtype)
        if positional:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _per_example_norm(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def latent_attack(model: nn.Module, layer: nn.Module, batch: dict, epsilon: float, steps: int) -> torch.Tensor:
    """δ ``[B, T, d]``: the PGD perturbation of ``layer``'s input that lowers the batch's mean answer NLL within the
    per-example L2 ball of radius ``epsilon`` and the clean latents' [min, max] (the module docstring, step 1)."""
    was_training = model.training
    model.eval()
    clean: list[torch.Tensor] = []
    try:
        with torch.no_grad(), added_to_layer_input(layer, None, clean):
            forward_logits(model, batch)
        latents = clean[0].float()
        low, high = latents.min(), latents.max()

        def project(delta: torch.Tensor) -> torch.Tensor:
            delta = delta * torch.clamp(epsilon / _per_example_norm(delta).clamp(min=1e-12), max=1.0)
            return (torch.clamp(latents + delta, low, high) - latents).detach()

        delta = torch.randn_like(latents)
        delta = project(delta * torch.rand(delta.shape[0], *([1] * (delta.dim() - 1))) * epsilon
                        / _per_example_norm(delta))
        step_size = epsilon / max(1, steps)
        for _ in range(steps):
            delta.requires_grad_(True)
            with added_to_layer_input(layer, delta):
                nll = mean_nll(forward_logits(model, batch), batch["labels"])
            (grad,) = torch.autograd.grad(nll, delta)
            delta = project(delta.detach() - step_size * grad / (_per_example_norm(grad) + 1e-6))
    finally:
        model.train(was_training)
    return delta


class LatentAdversarial(RetainRegularised):
    """The shared attack; subclasses define the outer objective on the perturbed forward."""

    alters_activations = True  # δ is added by a hook, which activation recomputation would not see

    def _layer(self, model: nn.Module) -> nn.Module:
        layers = decoder_layers(model)
        if not 0 <= self.perturb_layer < len(layers):
            raise UnlearnkitError(f"{self.name}: perturb_layer {self.perturb_layer} out of range: the model has "
                                  f"{len(layers)} decoder layers; choose 0 .. {len(layers) - 1}")
        return layers[self.perturb_layer]

    def perturbed_logits(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of the forward with the attack's δ added, δ); ε = 0 is the plain forward (the attack is off)."""
        layer = self._layer(model)
        if self.epsilon == 0:
            logits = forward_logits(model, batch)
            return logits, logits.new_zeros(1)
        delta = latent_attack(model, layer, batch, self.epsilon, self.steps)
        with added_to_layer_input(layer, delta):
            return forward_logits(model, batch), delta


class AttackParams(MethodParams):
    epsilon: float = Field(8.0, ge=0, description="ε: the L2 radius of the latent perturbation per example (over "
                                                  "its whole [T × d] latent); 0 switches the attack off")
    steps: int = Field(6, ge=0, description="PGD steps of the inner attack (step size ε/steps)")
    perturb_layer: int = Field(4, ge=0, description="the perturbation is added to the input of this decoder layer "
                                                    "(0: the embeddings)")


@register
class AdvNPO(LatentAdversarial, NPO):
    """NPO on the forward perturbed by the latent attack, + the retain term on the clean forward."""

    name = "adv_npo"
    summary = ("LAU's AdvNPO: NPO against a latent PGD perturbation that re-elicits the forget answers; "
               "(steps+1)x the forget passes of NPO")
    citation = ("Yuan et al., Towards Robust Knowledge Unlearning: An Adversarial Framework for Assessing and "
                "Improving Unlearning Robustness in Large Language Models, 2024, arXiv:2408.10682")

    class Params(AttackParams):
        beta: float = Field(0.1, gt=0, description="NPO's inverse temperature")
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"

    # NPO's prepare: log π_ref(y|x) of every forget example on the untouched, unperturbed model

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits, delta = self.perturbed_logits(model, forget_batch)
        logprob = -sequence_nll(logits, forget_batch["labels"])
        reference = lookup_reference(self._reference_logprobs, forget_batch["index"], logprob.device)
        return npo_loss(logprob, reference, self.beta), {
            "log_ratio": (logprob - reference).mean().item(), "delta_norm": _per_example_norm(delta).mean().item()}


@register
class AdvGA(LatentAdversarial):
    """Gradient ascent on the forward perturbed by the latent attack (+ an optional retain term)."""

    name = "adv_ga"
    summary = "LAU's AdvGA: gradient ascent against a latent PGD perturbation that re-elicits the forget answers"
    citation = AdvNPO.citation

    class Params(AttackParams):
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = None

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits, delta = self.perturbed_logits(model, forget_batch)
        nll = mean_nll(logits, forget_batch["labels"])
        return -nll, {"forget_nll": nll.item(), "delta_norm": _per_example_norm(delta).mean().item()}
