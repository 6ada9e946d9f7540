"""Prompts with an adversarial suffix after the question: where the suffix goes, and a formatter that inserts it.

:func:`prompt_parts` cuts a question's prompt token ids where the question text ends (plain or chat template);
:class:`SuffixFormatter` is a :class:`~unlearnkit.data.formatting.QAFormatter` whose prompts carry a fixed suffix
there, so every metric of an evaluation sees the suffixed prompt (:mod:`unlearnkit.attacks.suffix`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.errors import UnlearnkitError

_MARK = "\ue000"  # a private-use character: marks where the question ends in the rendered prompt


@dataclass(frozen=True)
class PromptParts:
    """A prompt cut right after the question: ``before + suffix + after`` is the suffixed prompt."""

    before: list[int]
    after: list[int]

    def with_suffix(self, suffix_ids: Sequence[int]) -> list[int]:
        return [*self.before, *suffix_ids, *self.after]


def prompt_parts(formatter: QAFormatter, question: str) -> PromptParts:
    """The prompt token ids of ``question`` cut where the question text ends.

    The prompt text is ``formatter.prompt_text`` (plain template or chat template, one user turn); the cut is found
    by rendering the prompt with a marker character after the question. With a fast tokenizer the whole prompt is
    tokenized once (as :meth:`QAFormatter.prompt_ids` does) and cut between the tokens that end at or before the
    question's end and the rest, so ``before + after`` is exactly the prompt without a suffix. When a token crosses
    the cut (e.g. a merge of the question's last character with the template's next one) or the tokenizer is slow,
    the two text parts are tokenized separately. The formatter's truncation of long prompts is not applied here.
    """
    marked = formatter.prompt_text(question + _MARK)
    if marked.count(_MARK) != 1:
        raise UnlearnkitError("the chat template does not copy the user message verbatim, so the suffix has no "
                              "place: use template='plain'")
    cut = marked.index(_MARK)
    text = marked.replace(_MARK, "")
    if text != formatter.prompt_text(question):
        raise UnlearnkitError("the chat template changes the user message around the question, so the suffix has "
                              "no place: use template='plain'")
    tokenizer = formatter.tokenizer
    special = not formatter.use_chat  # the chat template writes any BOS token itself
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
        split = next((i for i, (_, end) in enumerate(offsets) if end > cut), len(ids))
        if split == len(ids) or offsets[split][0] >= cut:
            return PromptParts(ids[:split], ids[split:])
    before = list(tokenizer(text[:cut], add_special_tokens=special)["input_ids"])
    after = list(tokenizer(text[cut:], add_special_tokens=False)["input_ids"])
    return PromptParts(before, after)


class SuffixFormatter(QAFormatter):
    """A :class:`QAFormatter` that appends fixed suffix token ids to every question (see :func:`prompt_parts`).

    ``encode`` (inherited) builds on ``prompt_ids``, so answers are truncated as the base formatter does. A prompt
    longer than ``max_length`` keeps its last ``max_length // 2`` tokens, as in the base formatter.
    ``prompt_text`` returns the decoded suffixed prompt (for display and for the result store's fingerprint); it
    need not re-tokenize to ``prompt_ids``.
    """

    def __init__(self, formatter: QAFormatter, suffix_ids: Sequence[int]):
        super().__init__(formatter.tokenizer, formatter.max_length, "chat" if formatter.use_chat else "plain")
        self.base = formatter
        self.suffix_ids = [int(t) for t in suffix_ids]

    def prompt_ids(self, question: str) -> list[int]:
        ids = prompt_parts(self.base, question).with_suffix(self.suffix_ids)
        if len(ids) > self.max_length:
            ids = ids[-(self.max_length // 2):]
        return ids

    def prompt_text(self, question: str) -> str:
        return self.tokenizer.decode(self.prompt_ids(question))
