"""Alternate Preference Optimization (AltPO): DPO that prefers a plausible made-up answer to the true forget answer.

Paper: "Alternate Preference Optimization for Unlearning Factual Knowledge in Large Language Models", Mekala,
Dorna, Dubey, Lalwani, Koleczek, Rungta, Hasan and Lobo, COLING 2025, arXiv:2409.13474. Reference code:
molereddy/Alternate-Preference-Optimization (``generate.py``, ``config/generate.yaml``, the ``subdpo`` loss of
``dataloader.py``) and OpenUnlearning ``community/methods/AltPO`` (its ``DPO`` trainer with the alternate answer
as the preferred response).

Each forget question x with true answer y gets an alternate answer ỹ written by the model itself before unlearning
(below). Then, with sequence-SUMMED log-probabilities and pi_ref the model before unlearning:

    L_AltPO = -(2/beta) * E log sigmoid(beta * [(log pi_theta(ỹ|x) - log pi_ref(ỹ|x))
                                               - (log pi_theta(y|x) - log pi_ref(y|x))])
    L = forget_weight * L_AltPO + retain_weight * R(D_r)

the IdkDPO loss (:func:`unlearnkit.methods.idk.dpo_loss`, same 2/beta scale as both references) with the refusal
replaced by the alternate. Defaults: beta=0.1, retain NLL, weights 1 (OpenUnlearning's DPO/GradDiff defaults; the
AltPO README suggests a search over beta in {0.05, 0.1, 0.5} and retain_weight in {1, 2, 5}).

**The alternates** (reference ``generate.py`` + ``generate.yaml``): the fine-tuned model is shown the question,
the true answer and the instruction "Now write another version of the answer with some alternate plausible facts
that change answer details." followed by "Alternate Answer :", and SAMPLES a continuation (do_sample, temperature
1.0, max_new_tokens 200); the text is cut at the first "Question:" or "Q:" and stripped. unlearnkit does this in
:meth:`AltPO.prepare`, once per forget example, on the untouched model:

- the generation context is the example exactly as it is trained on (its formatted prompt and the true answer
  tokens, without the final EOS), then ``"\\n" + instruction + "\\nAlternate Answer :"``. The reference wraps the
  same text in the model's own instruction markup (``[INST] ... [/INST]`` for Llama-2, a chat turn for Llama-3.2);
  unlearnkit keeps the wording and the order, not a model-specific wrapper.
- sampling uses ``model.generate`` with temperature 1.0 and top_k 50 (the Hugging Face default, which the reference
  inherits: it does not set top_k), one example at a time as the reference (batch_size 1). The random numbers come
  from the training loop's seeded generator (``train.seed``), so a run, a resumed run and every process draw the
  same alternates.
- the alternate text is re-tokenized as an answer (``tokenizer(text, add_special_tokens=False)`` + EOS, as
  :class:`unlearnkit.data.formatting.QAFormatter`) after the example's prompt tokens; an empty alternate is EOS alone.
- one alternate per example (the reference's ``augment_k: 1``; OpenUnlearning's run script reads a file of five
  samples per question, whose use we could not pin down).

The prompt is written with the model's tokenizer, read from the model's folder (``model.name_or_path``, where
:func:`unlearnkit.models.load.load_causal_lm` loads it from). pi_ref of both answers is computed once in prepare
(no second model unless retain_loss="kl"). Cost: once, up to ``max_new_tokens`` decoding steps per forget example
and 2 reference forwards; per step, 2 forward+backward on the forget batch (true and alternate answers) + 1 on the
retain batch.
"""

from __future__ import annotations

from typing import Iterable

import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX
from unlearnkit.methods.idk import dpo_loss
from unlearnkit.methods.losses import forward_logits, sequence_nll
from unlearnkit.methods.model_tokenizer import model_tokenizer
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.reference_logprobs import compute_reference_logprobs, lookup_reference
from unlearnkit.methods.registry import register
from unlearnkit.methods.retain_regularised import ForgetWeight, RetainLoss, RetainRegularised, RetainWeight

INSTRUCTION = "Now write another version of the answer with some alternate plausible facts that change answer details."
ANSWER_CUE = "\nAlternate Answer :"
STOP_SEQUENCES = ("Question:", "Q:")  # the reference's `until` (its variants with a trailing space are implied)


def split_rows(batch: dict) -> list[tuple[int, list[int], list[int]]]:
    """``(index, prompt_ids, answer_ids)`` of each row of a right-padded forget batch (answer = labelled tokens)."""
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        labelled = (batch["labels"][i][: len(ids)] != IGNORE_INDEX).nonzero()
        start = int(labelled[0]) if len(labelled) else len(ids)
        rows.append((int(batch["index"][i]), ids[:start], ids[start:]))
    return rows


def cut_alternate(text: str) -> str:
    """The generated text up to the first stop sequence, stripped (reference ``generate.py``)."""
    for stop in STOP_SEQUENCES:
        text = text.split(stop)[0]
    return text.strip()


def generation_context(prompt_ids: list[int], answer_ids: list[int], cue_ids: list[int], eos_token_id: int) -> list[int]:
    """The example as trained on (prompt + true answer, its final EOS dropped), then the instruction and the cue."""
    answer = answer_ids[:-1] if answer_ids and answer_ids[-1] == eos_token_id else answer_ids
    return prompt_ids + answer + cue_ids


@torch.no_grad()
def generate_alternates(model: nn.Module, tokenizer, forget_batches: Iterable[dict], instruction: str = INSTRUCTION,
                        max_new_tokens: int = 200, temperature: float = 1.0, top_k: int = 50) -> dict[int, list[int]]:
    """``{index: alternate answer ids (ending with EOS)}``, sampled from ``model`` one forget example at a time."""
    eos = int(tokenizer.eos_token_id)
    cue = list(tokenizer("\n" + instruction + ANSWER_CUE, add_special_tokens=False)["input_ids"])
    device = next(model.parameters()).device
    alternates: dict[int, list[int]] = {}
    for batch in forget_batches:
        for index, prompt, answer in split_rows(batch):
            context = torch.tensor([generation_context(prompt, answer, cue, eos)], device=device)
            output = model.generate(input_ids=context, attention_mask=torch.ones_like(context), do_sample=True,
                                    temperature=temperature, top_k=top_k, top_p=1.0,
                                    max_new_tokens=max_new_tokens, eos_token_id=eos,
                                    pad_token_id=int(tokenizer.pad_token_id), use_cache=True)
            text = cut_alternate(tokenizer.decode(output[0, context.shape[1]:], skip_special_tokens=True))
            alternates[index] = list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [eos] if text else [eos]
    return alternates


@register
class AltPO(RetainRegularised):
    """forget_weight * L_DPO(y_w = the model's own alternate answer, y_l = the true answer) + retain term."""

    name = "altpo"
    summary = "DPO that prefers an alternate answer, made up by the original model, to the true forget answer."
    citation = ("Mekala, Dorna, Dubey, Lalwani, Koleczek, Rungta, Hasan and Lobo, Alternate Preference Optimization "
                "for Unlearning Factual Knowledge in Large Language Models, COLING 2025, arXiv:2409.13474")

    class Params(MethodParams):
        beta: float = Field(0.1, gt=0, description="DPO inverse temperature: how strongly the alternate answer is "
                                                   "preferred to the true one, relative to the original model")
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"
        max_new_tokens: int = Field(200, ge=1, description="longest alternate answer sampled (reference: 200)")
        temperature: float = Field(1.0, gt=0, description="sampling temperature of the alternates (reference: 1.0)")
        top_k: int = Field(50, ge=0, description="top-k of the alternates' sampling; 0 = the full vocabulary "
                                                 "(reference: the Hugging Face default, 50)")
        instruction: str = Field(INSTRUCTION, min_length=1,
                                 description="the instruction after the true answer that asks for an alternate")

    def __init__(self, **values):
        super().__init__(**values)
        self._alternates: dict[int, list[int]] = {}
        self._pad_token_id = 0
        self._reference_answer: torch.Tensor | None = None
        self._reference_alternate: torch.Tensor | None = None

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Sample each forget example's alternate from the untouched ``model``; store pi_ref of both answers."""
        batches = list(forget_batches)
        tokenizer = model_tokenizer(model, "AltPO", "writes its alternate-answer prompt")
        alternates = generate_alternates(model, tokenizer, batches, self.instruction, self.max_new_tokens,
                                         self.temperature, self.top_k)
        self.use_alternates(model, batches, alternates, int(tokenizer.pad_token_id))
        super().prepare(model, batches, reference_model)

    def use_alternates(self, model: nn.Module, forget_batches: list[dict], alternates: dict[int, list[int]],
                       pad_token_id: int) -> None:
        """Train against the given alternate answers (``{index: answer ids}``); store pi_ref of both answers."""
        self._pad_token_id = pad_token_id
        self._alternates = {index: prompt + alternates[index]
                            for batch in forget_batches for index, prompt, _ in split_rows(batch)}
        self._reference_answer = compute_reference_logprobs(model, forget_batches)[""]
        alternate_batches = [self.alternate_batch(batch) for batch in forget_batches]
        self._reference_alternate = compute_reference_logprobs(model, alternate_batches)[""]

    def alternate_batch(self, forget_batch: dict) -> dict:
        """The rows of ``forget_batch`` with their alternate answers: ``input_ids``, ``attention_mask``, ``labels``,
        ``index`` (right-padded, the prompt masked in the labels)."""
        index = forget_batch["index"].tolist()
        missing = [i for i in index if i not in self._alternates]
        if missing:
            raise RuntimeError(f"forget examples {missing} have no alternate answer: call method.prepare(model, "
                               "forget_batches) on every forget example before training")
        rows = [self._alternates[i] for i in index]
        prompt_lengths = [len(p) for _, p, _ in split_rows(forget_batch)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (row, start) in enumerate(zip(rows, prompt_lengths)):
            ids[r, : len(row)] = torch.tensor(row)
            labels[r, start : len(row)] = torch.tensor(row[start:])
            mask[r, : len(row)] = 1
        device = forget_batch["input_ids"].device
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
                "index": forget_batch["index"]}

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        alternate_batch = self.alternate_batch(forget_batch)
        answer = -sequence_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        alternate = -sequence_nll(forward_logits(model, alternate_batch), alternate_batch["labels"])
        index = forget_batch["index"]
        answer_ratio = answer - lookup_reference(self._reference_answer, index, answer.device)
        alternate_ratio = alternate - lookup_reference(self._reference_alternate, index, alternate.device)
        return dpo_loss(alternate_ratio, answer_ratio, self.beta), {
            "alternate_log_ratio": alternate_ratio.mean().item(), "answer_log_ratio": answer_ratio.mean().item()}
