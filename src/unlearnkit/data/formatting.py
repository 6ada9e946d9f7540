"""Turn (question, answer) pairs into model inputs, and batches of them into padded tensors.

The prompt is the tokenizer's chat template (one user turn, generation prompt added) when the tokenizer has one,
else ``"Question: {q}\\nAnswer: "``. The answer tokens are followed by the end-of-sequence token. Labels are the
input ids with the prompt replaced by -100; the EOS token is part of the labels.

The labels are built from the token lists directly, never by masking ``input_ids == pad_token_id``: the original
TOFU code (locuslab/tofu) sets ``pad = eos`` and so masks out the real EOS tokens of every answer (see
research/metrics.md §1); current OpenUnlearning keeps the EOS in its labels, as here.

Two tokenizations (``tokenization``):

- ``"separate"`` (the default): the prompt and the answer are tokenized on their own and concatenated, so every
  answer to a question starts after the same prompt tokens and the answer's tokens are what the answer alone
  tokenizes to.
- ``"joint"``: OpenUnlearning's sequences (``preprocess_chat_instance`` in its ``src/data/utils.py``): prompt +
  answer tokenized as ONE string (with a chat template: the user turn and the assistant's answer rendered by the
  template, ``add_generation_prompt=False``), the EOS appended unless the sequence already ends with it, and the
  label mask taken from the length of the prompt tokenized alone. When the tokenizer merges across the boundary
  (the plain prompt's trailing space and the answer's first word become one token " The"), the first answer
  token falls inside the masked prompt length and is never scored, and the answer's tokens differ from the answer
  alone's. A model fine-tuned by OpenUnlearning was trained on these sequences. Its truncation is reproduced too
  (the whole sequence cut at ``max_length`` before the EOS is appended, the prompt alone cut at ``max_length``);
  with a chat template OpenUnlearning does not truncate, and neither does this unless a sequence exceeds
  ``max_length``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal, Sequence

from unlearnkit.errors import DataError

IGNORE_INDEX = -100
PLAIN_TEMPLATE = "Question: {question}\nAnswer: "
# OpenUnlearning's jailbreak variant of the TOFU evaluation (configs/eval/tofu-JB.yaml with the model config
# configs/model/Llama-3.2-1B-Instruct-JB.yaml): the assistant's turn is made to start with this text (appended to its
# asst_start_tag, no space after it), a prefix-injection jailbreak
JAILBREAK_ANSWER_START = "Sure, here is the answer:"

Template = Literal["auto", "chat", "plain"]
Tokenization = Literal["separate", "joint"]
TOKENIZATIONS = ("separate", "joint")


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ``input_ids = prompt_ids + answer_ids``; ``labels`` masks the prompt."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.prompt_length]

    @property
    def answer_ids(self) -> list[int]:
        return self.input_ids[self.prompt_length :]


class QAFormatter:
    """Formats and tokenizes QA pairs for one tokenizer.

    ``max_length`` truncates the answer (never the prompt) so that prompt + answer fits; a prompt that alone is
    longer than ``max_length`` keeps its last ``max_length // 2`` tokens.
    """

    def __init__(self, tokenizer, max_length: int = 256, template: Template = "auto",
                 tokenization: Tokenization = "separate", answer_start: str = ""):
        if tokenization not in TOKENIZATIONS:
            raise DataError(f"unknown tokenization {tokenization!r}: choose 'separate' or 'joint'")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token: set tokenizer.eos_token before formatting")
        self.tokenizer = tokenizer
        self.max_length = max_length
        has_chat = getattr(tokenizer, "chat_template", None) is not None
        if template == "chat" and not has_chat:
            raise ValueError("template='chat' but the tokenizer has no chat_template: use template='plain'")
        self.use_chat = has_chat if template == "auto" else template == "chat"
        self.tokenization = tokenization
        self.answer_start = answer_start
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    def prompt_text(self, question: str) -> str:
        """The prompt in front of every answer: the template's, then ``answer_start`` (the start of the assistant's
        turn that every answer is made to continue; empty unless set, :data:`JAILBREAK_ANSWER_START` for the
        jailbreak variant)."""
        if self.use_chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            ) + self.answer_start
        return PLAIN_TEMPLATE.format(question=question) + self.answer_start

    def prompt_ids(self, question: str) -> list[int]:
        # the chat template already writes any BOS token itself
        ids = self.tokenizer(self.prompt_text(question), add_special_tokens=not self.use_chat)["input_ids"]
        if len(ids) > self.max_length:
            ids = ids[-(self.max_length // 2) :]
        return list(ids)

    def answer_ids(self, answer: str) -> list[int]:
        return list(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) + [self.eos_token_id]

    def with_tokenization(self, tokenization: Tokenization) -> QAFormatter:
        """This formatter with another ``tokenization`` (itself when it already has it)."""
        if tokenization not in TOKENIZATIONS:
            raise DataError(f"unknown tokenization {tokenization!r}: choose 'separate' or 'joint'")
        return self._with(tokenization=tokenization)

    def with_answer_start(self, answer_start: str) -> QAFormatter:
        """This formatter with every prompt ending in ``answer_start`` (itself when it already does)."""
        return self._with(answer_start=answer_start)

    def _with(self, **changes) -> QAFormatter:
        if all(getattr(self, name) == value for name, value in changes.items()):
            return self
        changed = copy.copy(self)  # a subclass (the suffix attack's formatter) stays what it is
        for name, value in changes.items():
            setattr(changed, name, value)
        return changed

    def encode(self, question: str, answer: str) -> Encoded:
        if self.tokenization == "joint":
            return self._encode_joint(question, answer)
        prompt = self.prompt_ids(question)
        answer_ids = self.answer_ids(answer)[: max(1, self.max_length - len(prompt))]
        return Encoded(prompt + answer_ids, [IGNORE_INDEX] * len(prompt) + answer_ids, len(prompt))

    def _encode_joint(self, question: str, answer: str) -> Encoded:
        """OpenUnlearning's sequence and labels for one QA turn (see the module docstring)."""
        if self.use_chat:  # the template's text tokenized as apply_chat_template(tokenize=True) does
            turns = [{"role": "user", "content": question},
                     {"role": "assistant", "content": self.answer_start + answer}]
            full_text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=False)
            full = list(self.tokenizer(full_text, add_special_tokens=False)["input_ids"])[: self.max_length]
            prompt = list(self.tokenizer(self.prompt_text(question), add_special_tokens=False)["input_ids"])
            prompt = prompt[: self.max_length]
        else:
            text = self.prompt_text(question)
            full = self._tokens(text + answer)
            prompt = self._tokens(text)
        if full[-1] != self.eos_token_id:
            full = full + [self.eos_token_id]
        # OpenUnlearning masks len(prompt) positions; a prompt that alone is as long as the whole sequence (cut at
        # max_length) would leave nothing to score and labels longer than the ids there: keep the last token
        masked = min(len(prompt), len(full) - 1)
        return Encoded(full, [IGNORE_INDEX] * masked + full[masked:], masked)

    def _tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True, max_length=self.max_length,
                                   truncation=True)["input_ids"])

    def text_window(self) -> int:
        """The longest raw-text window (in tokens) that fits ``max_length`` with the tokenizer's special tokens."""
        return self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)

    def encode_text(self, text: str) -> Encoded:
        """A raw text as a language-modelling example: its tokens with the tokenizer's special tokens (a BOS when it
        adds one), truncated to ``max_length``, no EOS appended; every token after the first is a label.

        Raises ``UnlearnkitError`` for a text of fewer than two tokens (nothing to predict from).
        """
        ids = list(self.tokenizer(text)["input_ids"])[: self.max_length]
        if len(ids) < 2:
            raise DataError(f"the text {text[:40]!r} encodes to fewer than 2 tokens: drop texts this short")
        return Encoded(ids, [IGNORE_INDEX] + ids[1:], 1)


def collate(examples: Sequence[Encoded], pad_token_id: int, padding_side: Literal["right", "left"] = "right") -> dict:
    """Pad a list of encoded examples into ``input_ids``, ``attention_mask`` and ``labels`` tensors.

    Right padding for teacher-forced losses and scoring, left padding for generation. Padded label positions
    are -100; padded attention positions are 0.
    """
    import torch  # here, not at the top: reading a task's data (data/sources.py) must not import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, sl] = torch.tensor(e.input_ids)
        labels[i, sl] = torch.tensor(e.labels)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
