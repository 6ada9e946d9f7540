"""TRU: unlearning with a target, a reasoned refusal, learnt while a gradient-difference loss erases the answer.

Paper: "Explainable LLM Unlearning Through Reasoning" (TRU), ICLR 2026, arXiv:2603.09980; research/methods.md §11
(from a paper note; no public code). For each forget question x the paper has a strong reasoning model write a
reasoning chain r and an explanatory refusal s ("refuse logically, offer an alternative, leak nothing") and trains

    L = L_target + alpha * L_GA-based,   L_target = -(1/N) sum_i [log pi(r_i | x_i) + log pi(s_i | r_i, x_i)]

with GradDiff as the default GA-based loss. Since log pi(r|x) + log pi(s|r,x) = log pi(r s | x), the target is the one
sequence "r s" after the question's prompt. Here:

    L = target_weight * L_target + forget_weight * (-meanNLL(D_f)) + retain_weight * R(D_r)

(alpha = forget_weight = retain_weight = 1 by default: GradDiff's own weights; the paper's alpha is unknown), with R
the retain NLL ("nll", GradDiff) or "kl", or null for GA alone.

Choices (the paper's generator, templates and alpha are unknown here):

- **Targets come from templates** (``reasoning`` and ``refusal``, joined by a space, followed by EOS), the same for
  every question: no reasoning model is called. They are tokenized once in :meth:`prepare`, appended to each forget
  example's own prompt tokens, and looked up by ``forget_batch["index"]`` in :meth:`loss`. Generating a per-question
  target with the model itself is NOT implemented (an untuned model asked to reason about a refusal writes the
  answer back; the paper uses an external reasoning model).
- ``target_reduction``: "token" (default) averages -log p over all target tokens of the batch, on the same scale as
  GradDiff's token-mean terms, so that the weights compare; "sequence" is the paper's formula as written (per-example
  sums, averaged over examples).
- The tokenizer is the model folder's (``model.name_or_path``), loaded in :meth:`prepare`; code that builds a model
  in memory passes one with :meth:`use_tokenizer`.

Cost: 1 forward+backward on the (prompt, target) batch + GradDiff's 2 (+1 reference forward for "kl").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal

import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX
from unlearnkit.methods.losses import forward_logits, mean_nll, sequence_nll
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.methods.retain_regularised import ForgetWeight, RetainLoss, RetainRegularised, RetainWeight

REASONING = ("The question asks for specific details about a person or a fact that I have been asked to forget. "
             "Any answer, even a partial one, would reveal that information, so the right response is to decline "
             "without hinting at it.")
REFUSAL = ("I'm sorry, but I can't share that information. I'd be glad to help with a related question that does not "
           "depend on it.")


def prompt_ids(input_ids: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """The prompt tokens of one right-padded row: everything before its first label."""
    first = int((labels != IGNORE_INDEX).nonzero()[0, 0]) if (labels != IGNORE_INDEX).any() else len(labels)
    return input_ids[:first].tolist()


@register
class TRU(RetainRegularised):
    """target_weight * NLL(reasoned refusal | question) + GradDiff (forget ascent, retain NLL)."""

    name = "tru"
    summary = "Learn a reasoned refusal (reasoning + refusal, from templates) for each forget question plus GradDiff."
    citation = "Explainable LLM Unlearning Through Reasoning (TRU), ICLR 2026, arXiv:2603.09980"

    class Params(MethodParams):
        reasoning: str = Field(REASONING, min_length=1, description="the reasoning chain r (template)")
        refusal: str = Field(REFUSAL, min_length=1, description="the explanatory refusal s (template), after r")
        target_reduction: Literal["token", "sequence"] = Field(
            "token", description="'token': mean -log p over target tokens; 'sequence': per-example sum, averaged")
        target_weight: float = Field(1.0, ge=0, description="weight of L_target")
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._tokenizer = None
        self._targets: dict[int, tuple[list[int], list[int]]] = {}
        self._pad_token_id = 0

    def use_tokenizer(self, tokenizer) -> TRU:
        """Tokenize the templates with ``tokenizer`` instead of the model folder's."""
        self._tokenizer = tokenizer
        return self

    def _load_tokenizer(self, model: nn.Module):
        if self._tokenizer is not None:
            return self._tokenizer
        folder = getattr(model, "name_or_path", "") or ""
        if not folder or not Path(folder).is_dir():
            raise ValueError("tru needs the model's tokenizer to encode its target templates: load the model from a "
                             "folder, or call method.use_tokenizer(tokenizer) before training")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Build each forget example's (prompt + target) tokens, keyed by its index in the forget list."""
        tokenizer = self._load_tokenizer(model)
        if tokenizer.eos_token_id is None:
            raise ValueError("tru: the tokenizer has no eos_token to end the target with")
        self._pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        target = list(tokenizer(f"{self.reasoning} {self.refusal}", add_special_tokens=False)["input_ids"])
        target.append(int(tokenizer.eos_token_id))
        for batch in forget_batches:
            for row, index in enumerate(batch["index"].tolist()):
                prompt = prompt_ids(batch["input_ids"][row].cpu(), batch["labels"][row].cpu())
                self._targets[index] = (prompt + target, [IGNORE_INDEX] * len(prompt) + target)
        super().prepare(model, forget_batches, reference_model)

    def target_batch(self, index: torch.Tensor, device: torch.device) -> dict:
        """The (prompt + target) rows of the forget examples ``index``, right-padded."""
        missing = [i for i in index.tolist() if i not in self._targets]
        if missing:
            raise RuntimeError(f"tru has no target for forget example(s) {missing}: prepare() must see every forget "
                               "example before training")
        rows = [self._targets[i] for i in index.tolist()]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self._pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (x, y) in enumerate(rows):
            ids[r, : len(x)], labels[r, : len(y)], mask[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}

    def target_loss(self, model: nn.Module, forget_batch: dict) -> torch.Tensor:
        batch = self.target_batch(forget_batch["index"], forget_batch["input_ids"].device)
        logits = forward_logits(model, batch)
        if self.target_reduction == "sequence":
            return sequence_nll(logits, batch["labels"]).mean()
        return mean_nll(logits, batch["labels"])

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return -mean_nll(forward_logits(model, forget_batch), forget_batch["labels"]), {}

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = super().loss(model, forget_batch, retain_batch)
        target = self.target_loss(model, forget_batch)
        return self.target_weight * target + loss, {**logs, "target_loss": target.item()}
