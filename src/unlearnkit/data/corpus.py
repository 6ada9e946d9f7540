"""Raw-text (MUSE-style) tasks: corpora of documents to forget and retain, with optional QA to probe knowledge.

A :class:`CorpusTask` is the raw-text counterpart of :class:`~unlearnkit.data.types.Task`, shaped after MUSE
("MUSE: Machine Unlearning Six-Way Evaluation for Language Models", Shi et al. 2024, arXiv:2407.06460):

- ``forget`` / ``retain``: text corpora (the target model was trained on both, the retrained model on
  ``retain`` only); ``holdout``: texts of the same kind that neither saw (PrivLeak's non-members).
- ``forget_qa`` / ``retain_qa``: questions about the facts in the forget / retain texts (KnowMem), and
  ``forget_qa_icl`` / ``retain_qa_icl``: the few-shot examples put in front of them (MUSE's ``*_qa_icl`` files).
  Any of these may be empty; the metric that needs it is then skipped (no shots = zero-shot prompts).
- ``forget_mcq`` / ``retain_mcq``: multiple-choice questions (:mod:`unlearnkit.data.multiple_choice`) whose zero-shot
  accuracy measures the knowledge to remove (WMDP's bio / chem / cyber sets) and the knowledge to keep (MMLU).

File formats read by :func:`load_corpus_task`:

- ``.txt``: **the whole file is one document** (UTF-8). Long documents are cut into token windows by
  :func:`chunk_texts` (MUSE trains on fixed-length token windows of its corpora); to give several separate
  documents, use JSON Lines.
- ``.jsonl`` / ``.json``: one JSON object a line with a non-empty ``"text"`` string (other keys are ignored;
  blank lines are skipped), or a ``.json`` file holding one JSON array of such objects.
- QA files (``forget_qa`` etc.) are the question/answer files of :mod:`unlearnkit.data.custom`.

Every problem is raised as :class:`UnlearnkitError` naming the file, the 1-based line and the fix. Whether a
text is long enough for VerbMem depends on the tokenizer, so it is checked there (short texts are skipped and
counted, see :mod:`unlearnkit.evaluation.metrics.muse`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from unlearnkit.data.custom import load_qa_file
from unlearnkit.data.formatting import Encoded, QAFormatter
from unlearnkit.data.multiple_choice import MultipleChoice, load_multiple_choice
from unlearnkit.data.types import QAExample
from unlearnkit.data.user_files import json_records, read_utf8
from unlearnkit.errors import DataError

TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".jsonl", ".json")
TEXT_FIELD = "text"


@dataclass
class CorpusTask:
    """The data of one raw-text unlearning request (see the module docstring)."""

    name: str
    forget: list[str]
    retain: list[str]
    holdout: list[str] = field(default_factory=list)
    forget_qa: list[QAExample] = field(default_factory=list)
    retain_qa: list[QAExample] = field(default_factory=list)
    forget_qa_icl: list[QAExample] = field(default_factory=list)
    retain_qa_icl: list[QAExample] = field(default_factory=list)
    forget_mcq: list[MultipleChoice] = field(default_factory=list)
    retain_mcq: list[MultipleChoice] = field(default_factory=list)

    def require_holdout(self) -> list[str]:
        """The holdout texts; raises when there are none (PrivLeak and other membership tests need them)."""
        if not self.holdout:
            raise DataError(f"task {self.name!r} has no holdout texts, which PrivLeak needs: pass a holdout "
                                  "file of texts no model was trained on, or leave privleak out of the metrics")
        return self.holdout

    def chunked(self, tokenizer, max_tokens: int) -> CorpusTask:
        """A copy whose ``forget`` / ``retain`` / ``holdout`` texts are cut into windows of ``max_tokens`` tokens."""
        return replace(
            self,
            forget=chunk_texts(self.forget, tokenizer, max_tokens),
            retain=chunk_texts(self.retain, tokenizer, max_tokens),
            holdout=chunk_texts(self.holdout, tokenizer, max_tokens),
        )

    @property
    def full(self) -> list[str]:
        """What the target model is trained on: retain followed by forget texts (holdout excluded)."""
        return self.retain + self.forget

    def texts(self) -> list[str]:
        """Every string of the task, e.g. to train a tokenizer on."""
        out = self.forget + self.retain + self.holdout
        for split in (self.forget_qa, self.retain_qa, self.forget_qa_icl, self.retain_qa_icl):
            for ex in split:
                out += [ex.question, ex.answer]
        for question in self.forget_mcq + self.retain_mcq:
            out += [question.question, *question.choices]
        return out


def chunk_texts(texts: Sequence[str], tokenizer, max_tokens: int) -> list[str]:
    """Each text cut into consecutive windows of at most ``max_tokens`` tokens, in order; no empty chunks.

    A text is tokenized without special tokens and its token list split into windows of ``max_tokens``
    (the last window of a text may be shorter). With a fast tokenizer a chunk is the original text from the end
    of the previous window to the end of its last token, so the chunks of a text concatenate back to it exactly
    and never split a character; a slow tokenizer's windows are decoded instead. Chunks are stripped of
    surrounding whitespace; whitespace-only chunks are dropped. Re-tokenizing a chunk gives about
    ``max_tokens`` tokens: a BPE can merge differently at the cut.
    """
    if max_tokens < 1:
        raise DataError(f"max_tokens must be at least 1, got {max_tokens}: pass a positive window length")
    chunks: list[str] = []
    for text in texts:
        pieces = _fast_chunks(text, tokenizer, max_tokens) if tokenizer.is_fast else _decoded_chunks(
            text, tokenizer, max_tokens)
        chunks += [piece.strip() for piece in pieces if piece.strip()]
    return chunks


def encode_chunks(texts: Sequence[str], formatter: QAFormatter) -> list[Encoded]:
    """Texts cut into windows that fit the formatter's ``max_length`` (:meth:`QAFormatter.text_window`,
    :func:`chunk_texts`), each encoded as a language-modelling example (:meth:`QAFormatter.encode_text`: every token
    after the first is a label) — what the target and retain models train on and what unlearning methods push away
    from or hold on to. Windows of fewer than two tokens (nothing to predict) are dropped.
    """
    chunks = chunk_texts(texts, formatter.tokenizer, formatter.text_window())
    return [formatter.encode_text(chunk) for chunk in chunks if len(formatter.tokenizer(chunk)["input_ids"]) >= 2]


def training_items(examples: Sequence[QAExample] | Sequence[str], formatter: QAFormatter) -> list[Encoded]:
    """What a model trains on: QA pairs → ``formatter.encode`` (the answer tokens are the labels); raw texts →
    :func:`encode_chunks` (``max_length`` windows, every token a label)."""
    if examples and all(isinstance(e, str) for e in examples):
        return encode_chunks(examples, formatter)
    return [formatter.encode(e.question, e.answer) for e in examples]


def _fast_chunks(text: str, tokenizer, max_tokens: int) -> Iterator[str]:
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    start = 0
    for first in range(0, len(offsets), max_tokens):
        window = offsets[first : first + max_tokens]
        end = max(stop for _, stop in window)
        if first + max_tokens >= len(offsets):
            end = len(text)  # the last window takes any trailing text the tokenizer left out
        yield text[start:end]
        start = max(start, end)


def _decoded_chunks(text: str, tokenizer, max_tokens: int) -> Iterator[str]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for first in range(0, len(ids), max_tokens):
        yield tokenizer.decode(ids[first : first + max_tokens], skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def _text_of(item: Any, where: str) -> str:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object with a '{TEXT_FIELD}' field, got "
                              f"{type(item).__name__}: write one object per line")
    if TEXT_FIELD not in item:
        raise DataError(f"{where}: missing field '{TEXT_FIELD}': every object needs the document in "
                              f"'{TEXT_FIELD}'")
    if item[TEXT_FIELD] is None:
        raise DataError(f"{where}: '{TEXT_FIELD}' is null: write the document as text, or delete the line")
    value = item[TEXT_FIELD]
    if not isinstance(value, str):
        raise DataError(f"{where}: '{TEXT_FIELD}' must be a string, got {type(value).__name__}: put the "
                              "document in quotes")
    if not value.strip():
        raise DataError(f"{where}: empty '{TEXT_FIELD}': fill it in or delete the line")
    return value


def load_texts(path: str | Path) -> list[str]:
    """The documents of one ``.txt`` file (the whole file, one document) or ``.jsonl`` / ``.json`` file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES + JSON_SUFFIXES:
        raise DataError(f"{path}: unknown extension '{path.suffix}': use .txt (the whole file is one "
                              'document) or .jsonl (one {"text": "..."} object a line)')
    content = read_utf8(path)
    if suffix in TEXT_SUFFIXES:
        if not content.strip():
            raise DataError(f"{path}: the file is empty: write the document's text into it")
        return [content]
    records = json_records(path, content, '{"text": "..."}')
    texts = [_text_of(item, f"{path}, line {number}") for number, item in records]
    if not texts:
        raise DataError(f'{path}: no documents: add {{"text": "..."}} lines to the file')
    return texts


def load_corpus_task(forget: str | Path, retain: str | Path, holdout: str | Path | None = None,
                     forget_qa: str | Path | None = None, retain_qa: str | Path | None = None,
                     forget_qa_icl: str | Path | None = None, retain_qa_icl: str | Path | None = None,
                     forget_mcq: str | Path | None = None, retain_mcq: str | Path | None = None,
                     forget_mcq_subject: str | None = None, retain_mcq_subject: str | None = None,
                     name: str | None = None) -> CorpusTask:
    """A raw-text task from your files (see the module docstring for the formats).

    ``holdout`` (texts no model was trained on) enables PrivLeak; ``forget_qa`` / ``retain_qa`` enable KnowMem,
    prompted with the ``*_qa_icl`` examples as few-shot demonstrations (zero-shot without them); ``forget_mcq`` /
    ``retain_mcq`` (multiple-choice files, e.g. WMDP's and MMLU's) enable their accuracies, the ``*_mcq_subject``
    naming the topic of their prompts' description (default: each row's ``subject``). The texts are
    returned as loaded; cut them with :meth:`CorpusTask.chunked` once the tokenizer is known.
    """
    def qa(path: str | Path | None) -> list[QAExample]:
        return load_qa_file(path) if path is not None else []

    return CorpusTask(
        name=name or f"corpus-{Path(forget).stem}",
        forget=load_texts(forget),
        retain=load_texts(retain),
        holdout=load_texts(holdout) if holdout is not None else [],
        forget_qa=qa(forget_qa),
        retain_qa=qa(retain_qa),
        forget_qa_icl=qa(forget_qa_icl),
        retain_qa_icl=qa(retain_qa_icl),
        forget_mcq=load_multiple_choice(forget_mcq, forget_mcq_subject) if forget_mcq is not None else [],
        retain_mcq=load_multiple_choice(retain_mcq, retain_mcq_subject) if retain_mcq is not None else [],
    )
