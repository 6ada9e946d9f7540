"""U2A: NPO on the forget set with per-example weights set by each example's first-order effect on an outer objective.

Paper: "Bridging the Gap Between Preference Alignment and Machine Unlearning" (U2A), Feng, Li, Ji, Zhang, Zhang, Du and
Chen, 2025, arXiv:2504.06659; reference code
muyiahhh/U2A (``u2a.py: optimize_outer, optimize_unlearning_weights``; ``utils/loss.py: get_npo_inner_loss``);
research/methods.md §12.

Bi-level: theta*(omega) = argmin sum_i omega_i l_u(z_i; theta) (inner unlearning), omega chosen so that theta*(omega)
minimises an outer objective J. With the Hessian approximated by gamma * I the implicit gradient is
dJ/d omega_i = -grad J . grad l_u(z_i) / gamma, and the weights take an exponentiated-gradient step, then are
renormalised to mean 1 (the code's ``unlearning_weights[forget_idx] = updated / sum * len(forget_idx)``):

    delta_i = grad J . grad l_u(z_i) / gamma
    omega_i <- omega_i * exp(+eta * delta_i)          (weight_sign = "implicit", default)
    omega_i <- omega_i * exp(-eta * delta_i)          (weight_sign = "reference": the sign of the authors' code)
    L = (1/B) sum_{i in batch} omega_i * l_NPO(z_i) + retain_weight * R(D_r)

with l_NPO(z) = -(2/beta) log sigmoid(-beta (log pi_theta(y|x) - log pi_ref(y|x))), the toolkit's NPO
(``methods/npo.py``; sequence-summed log-probabilities, pi_ref precomputed in :meth:`prepare`).

Choices, each stated because the setting differs from the paper's:

- **J is the retain loss** (mean NLL of the retain batch). The paper's J is a DPO loss on a preference-alignment set;
  an unlearning task has no preference set, and what unlearning must not damage is the retain set. A forget example
  whose NPO descent step also lowers the retain loss (delta_i > 0) gains weight.
- **The sign.** The implicit-function derivative above says a helpful example (delta_i > 0) should gain weight; the
  authors' code multiplies by exp(-eta * delta_i), which does the opposite. "implicit" is the default because it is
  the derivation's; "reference" reproduces the code.
- **Online.** The weights of the batch's examples are updated at every step, before the loss, from the current
  theta (the code alternates whole inner epochs with up to 3 outer updates and also selects a top-1024 subset of a
  candidate pool; neither the alternation nor the pool selection is done here). All forget weights are then
  renormalised to mean 1. The weights persist across steps (:meth:`state_dict`).
- The weights live in each process: with several processes each updates the weights of the examples it sees and
  rescales its own table, so the tables can differ between processes (one process reproduces the description).
- ``eta * delta_i`` is clipped to [-10, 10] so that one large gradient product cannot overflow the exponential.
- The code's regulariser (beta/2) omega^(-1/2) is 0 in its published NPO script (``--beta 0``) and is left out.
- Defaults: ``beta`` = 0.1 (the code's ``npo_beta``), ``weight_lr`` = 1e-2 (``--weights_lr`` of the NPO scripts),
  ``gamma`` = 1, ``retain_weight`` = 0 (the code's NPO inner loss has no retain term).

Cost per step: 1 forward of the forget batch and B backward passes through it (one per example, for the
per-example gradients), 1 forward+backward of the retain batch (grad J), then the loop's backward: about
(B+2) backward passes, i.e. B/2 + 1 times GradDiff. The per-example gradients are held one at a time (one extra
model-sized vector besides grad J).
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import forward_logits, mean_nll, sequence_nll
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.reference_logprobs import compute_reference_logprobs, lookup_reference
from unlearnkit.methods.registry import register

MAX_EXPONENT = 10.0


def _flat(grads: tuple[torch.Tensor | None, ...], params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).float() for p, g in zip(params, grads)])


@register
class U2A(UnlearningMethod):
    """Per-example weighted NPO; weights follow each example's gradient alignment with the retain loss."""

    name = "u2a"
    summary = ("NPO with per-example weights moved each step by the example's gradient alignment with the retain loss "
               "(implicit gradient, H = gamma I); about (B+2) backward passes per step")
    citation = ("Feng, Li, Ji, Zhang, Zhang, Du and Chen, Bridging the Gap Between Preference Alignment and Machine "
                "Unlearning, 2025, arXiv:2504.06659")
    uses_retain = True

    class Params(MethodParams):
        beta: float = Field(0.1, gt=0, description="NPO inverse temperature (the code's npo_beta)")
        weight_lr: float = Field(1e-2, ge=0, description="eta: step size of the exponentiated-gradient weight update")
        gamma: float = Field(1.0, gt=0, description="Hessian approximation H = gamma * I in the implicit gradient")
        weight_sign: Literal["implicit", "reference"] = Field(
            "implicit", description="'implicit': helpful examples gain weight (the derivation); 'reference': the "
                                    "authors' code's opposite sign")
        retain_weight: float = Field(0.0, ge=0, description="weight of a retain NLL term in the loss (0: none, as "
                                                            "the code's NPO inner loss)")

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._reference_logprobs: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Store log pi_ref(y|x) of every forget example; every weight starts at 1 (unless restored by
        :meth:`load_state_dict`)."""
        self._reference_logprobs = compute_reference_logprobs(model, forget_batches)[""]
        if self._weights is None or len(self._weights) != len(self._reference_logprobs):
            self._weights = torch.ones(len(self._reference_logprobs), dtype=torch.float64)

    def state_dict(self) -> dict:
        return {"weights": None if self._weights is None else self._weights.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self._weights = None if state["weights"] is None else torch.tensor(state["weights"], dtype=torch.float64)

    def weights(self) -> torch.Tensor:
        """The current weight of every forget example (mean 1)."""
        if self._weights is None:
            raise RuntimeError("the U2A weights are missing: call method.prepare(model, forget_batches) first")
        return self._weights.clone()

    def update_weights(self, index: list[int], alignments: list[float]) -> None:
        """omega_i <- omega_i exp(+-eta delta_i) for the batch's examples, then every weight rescaled to mean 1."""
        sign = 1.0 if self.weight_sign == "implicit" else -1.0
        for i, delta in zip(index, alignments):
            exponent = min(max(sign * self.weight_lr * delta, -MAX_EXPONENT), MAX_EXPONENT)
            self._weights[i] *= float(torch.tensor(exponent, dtype=torch.float64).exp())
        self._weights *= len(self._weights) / self._weights.sum()

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        if retain_batch is None:
            raise ValueError("u2a needs a retain batch (its outer objective), but the training loop passed None")
        index = forget_batch["index"]
        logprob = -sequence_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        reference = lookup_reference(self._reference_logprobs, index, logprob.device)
        per_example = -(2.0 / self.beta) * F.logsigmoid(-self.beta * (logprob - reference))
        retain_loss = mean_nll(forward_logits(model, retain_batch), retain_batch["labels"])

        params = [p for p in model.parameters() if p.requires_grad]
        grad_j = _flat(torch.autograd.grad(retain_loss, params, retain_graph=True, allow_unused=True), params)
        alignments = []
        for row in range(len(per_example)):
            g = _flat(torch.autograd.grad(per_example[row], params, retain_graph=True, allow_unused=True), params)
            alignments.append(float(grad_j @ g) / self.gamma)
        self.update_weights(index.tolist(), alignments)

        weights = self._weights[index.cpu()].to(per_example.device, per_example.dtype)
        loss = (weights * per_example).mean()
        if self.retain_weight:
            loss = loss + self.retain_weight * retain_loss
        return loss, {"forget_loss": per_example.mean().item(), "retain_loss": retain_loss.item(),
                      "mean_alignment": sum(alignments) / len(alignments),
                      "max_weight": float(self._weights.max()), "min_weight": float(self._weights.min())}
