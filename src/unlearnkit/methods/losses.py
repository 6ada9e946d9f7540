"""Building blocks shared by the unlearning losses: answer log-probabilities, the two NLL reductions, retain terms.

The reference code uses two different reductions of the negative log-likelihood, and the choice changes a method's
effective strength (research/methods.md §0):

- :func:`sequence_nll`: the **sum** over a sequence's answer tokens of ``-log p``, one value per example. This is
  ``get_batch_loss`` of the NPO / SimNPO TOFU code and ``compute_batch_nll`` of OpenUnlearning; NPO, SimNPO and
  IdkDPO use it (``log pi(y|x) = -sequence_nll``).
- :func:`mean_nll`: the Hugging Face ``outputs.loss``, the mean over **all** non-ignored answer tokens of the batch
  (longer answers weigh more). GA, GradDiff, IdkNLL and every "nll" retain term use it.

Labels follow :mod:`unlearnkit.data.formatting`: ``labels[t]`` is the token at position ``t`` (not shifted),
``-100`` marks prompt and padding. The logits at position ``t`` predict the token at ``t + 1``, so both reductions
shift by one. Log-softmax is taken in float32 whatever the model's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX

RETAIN_LOSSES = ("nll", "kl")


def forward_logits(model: nn.Module, batch: dict, prefix: str = "") -> torch.Tensor:
    """The logits ``[B, T, V]`` of ``model`` on ``batch[prefix + "input_ids"]`` (``prefix="idk_"`` for refusals).

    Labels are not passed, so the model does not compute its own loss a second time.
    """
    return model(
        input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"], use_cache=False
    ).logits


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` booleans: which shifted positions score an answer token (``labels[:, 1:] != -100``)."""
    return labels[:, 1:] != IGNORE_INDEX


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]``: ``log p(labels[:, t+1] | logits[:, t])`` at answer positions, 0 at ignored ones."""
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    nll = F.cross_entropy(shifted_logits.transpose(1, 2), shifted_labels, ignore_index=IGNORE_INDEX, reduction="none")
    return -nll


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B]``: per example, the SUM over answer tokens of ``-log p`` (``-log pi(y|x)``)."""
    return -token_logprobs(logits, labels).sum(dim=-1)


def answer_lengths(labels: torch.Tensor) -> torch.Tensor:
    """``[B]``: the number of answer tokens each example is scored on (|y|)."""
    return answer_mask(labels).sum(dim=-1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Scalar: the mean of ``-log p`` over every answer token of the batch (the Hugging Face ``outputs.loss``)."""
    return -token_logprobs(logits, labels).sum() / answer_mask(labels).sum()


def retain_kl(model: nn.Module, reference_model: nn.Module, batch: dict) -> torch.Tensor:
    """KL(pi_ref || pi_theta) on the retain batch, exactly as the NPO TOFU code and OpenUnlearning compute it.

    ``F.kl_div(log_softmax(current), log_softmax(reference), reduction="batchmean", log_target=True)`` over the
    logits flattened to ``[B*T, V]``: the token-level KL summed over the vocabulary and averaged over all ``B*T``
    rows. As in the reference, the rows include the prompt and the padding positions (there is no mask), so the
    average is over every position, not only the answer tokens.
    """
    with torch.no_grad():
        reference_logits = forward_logits(reference_model, batch)
    reference = F.log_softmax(reference_logits.float(), dim=-1).flatten(0, 1)
    current = F.log_softmax(forward_logits(model, batch).float(), dim=-1).flatten(0, 1)
    return F.kl_div(current, reference, reduction="batchmean", log_target=True)


def retain_term(kind: str, model: nn.Module, retain_batch: dict | None, reference_model: nn.Module | None) -> torch.Tensor:
    """The retain part of a loss: ``mean_nll`` of the retain batch (``"nll"``) or :func:`retain_kl` (``"kl"``)."""
    if retain_batch is None:
        raise ValueError(f"retain_loss={kind!r} needs a retain batch, but the training loop passed None")
    if kind == "nll":
        return mean_nll(forward_logits(model, retain_batch), retain_batch["labels"])
    if kind == "kl":
        if reference_model is None:
            raise ValueError("retain_loss='kl' needs the reference model: pass reference_model to prepare() first")
        return retain_kl(model, reference_model, retain_batch)
    raise ValueError(f"unknown retain term {kind!r}")


def require_reference(needed: bool, reference_model: nn.Module | None, method: str) -> nn.Module | None:
    """The reference model a method keeps from ``prepare`` (``None`` when it does not need one)."""
    if not needed:
        return None
    if reference_model is None:
        raise ValueError(f"method {method!r} needs a frozen reference model: pass reference_model to prepare()")
    return reference_model
