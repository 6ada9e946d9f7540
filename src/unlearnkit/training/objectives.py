"""Objectives that are not unlearning methods but run through the same loop: fine-tuning.

``unlearnkit prepare`` fine-tunes the target model (on retain + forget) and the retain model (on retain only) with
:func:`unlearnkit.training.loop.train`, passing the training set as the ``forget`` stream and ``retain=None``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX
from unlearnkit.methods.base import UnlearningMethod


def mean_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over all non-ignored target tokens of the batch of ``-log p(token | prefix)`` (next-token shift applied).

    The logits are cast to float32 first, so bf16 autocast does not round the loss.
    """
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    return F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.size(-1)), shifted_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="mean")


class FineTune(UnlearningMethod):
    """Supervised fine-tuning: the answer NLL of the "forget" stream (here simply the training set).

    Paper: the TOFU fine-tuning stage, "TOFU: A Task of Fictitious Unlearning for LLMs", Maini, Feng, Schwarzschild,
    Lipton, Kolter, 2024, arXiv:2401.06121 (their ``finetune.py``: the Hugging Face causal-LM loss).

    Formula, for a micro-batch B with answer-token positions T_i of example i (prompt tokens masked to -100)::

        L(B) = (1 / Σ_i |T_i|) · Σ_i Σ_{t ∈ T_i} −log p_θ(y_t | y_<t, x_i)

    i.e. the mean over all answer tokens of the micro-batch (``outputs.loss`` of a Hugging Face causal LM). The
    loop weights micro-batches by their number of examples, not tokens (a reconstruction: the reference code's
    Trainer averaged per micro-batch losses, and its exact accumulation rule depends on the transformers version).
    """

    name = "finetune"
    summary = "fine-tune on the given examples (answer-token NLL); used to prepare target and retain models"
    citation = "Maini et al., TOFU: A Task of Fictitious Unlearning for LLMs, 2024, arXiv:2401.06121"

    def loss(self, model: nn.Module, forget_batch: dict,
             retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(input_ids=forget_batch["input_ids"], attention_mask=forget_batch["attention_mask"]).logits
        nll = mean_token_nll(logits, forget_batch["labels"])
        return nll, {"nll": float(nll.detach())}
