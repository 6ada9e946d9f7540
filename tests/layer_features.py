"""Frozen features of a causal LM: the mean-pooled hidden states of one layer, one vector per example.

These are the inputs of the representation-level metrics in :mod:`unlearnkit.evaluation.metrics.representation`
("Are We Truly Forgetting?", arXiv:2503.06991, maps an image model's penultimate-layer features to, for an LLM,
the mean-pooled hidden states of a chosen layer; research/metrics.md §5, methods.md §18 — the LLM mapping is a
reconstruction, the paper studies image classifiers).

Which layer. ``layer`` indexes Hugging Face's ``hidden_states`` tuple (``output_hidden_states=True``), which has
``num_layers + 1`` entries:

- ``layer=0``: the token embeddings;
- ``layer=l`` (1 <= l <= num_layers): the residual stream after decoder block ``l - 1`` (the l-th block);
- ``layer=num_layers`` (= ``-1``): the last block's output *after the final norm* (that is what Hugging Face
  puts last: for Llama, ``hidden_states[-1] = model.norm(output of the last block)``; checked in the tests).

Negative indices count from the end as in Python, so the valid range is ``-(num_layers + 1) .. num_layers``.

Which tokens. Examples are either QA pairs (``(question, answer)`` tuples or :class:`~unlearnkit.data.types.QAExample`)
encoded with :meth:`QAFormatter.encode` (prompt + answer + EOS), or raw strings tokenised by the formatter's
tokenizer with its special tokens (truncated to ``formatter.max_length``). ``pool`` chooses the positions averaged:

- ``"answer"`` (the default for QA pairs): the answer tokens, the EOS included — the tokens the unlearning losses
  act on. The prompt is left out because its template tokens (and any BOS token) are the same for every example,
  and in real LLMs the BOS position carries "massive activations" (Sun et al. 2024, arXiv:2402.17762) that would
  dominate a mean over all tokens;
- ``"all"`` (the only choice, and the default, for raw texts): every non-padding token, prompt included.

Features come from the scoring pass (:func:`~unlearnkit.evaluation.scoring.passes.score_pairs` /
:func:`~unlearnkit.evaluation.scoring.passes.score_texts` with a :class:`~unlearnkit.evaluation.scoring.pooling.FeatureSpec`): the
same right-padded, length-sorted batches that yield the log-probs, so the TOFU suite computes them in its one pass
(``evaluate_tofu(..., features=...)``); a causal model's hidden states at the real tokens do not depend on the right
padding, so each row equals the example run alone (tested against one-at-a-time runs). Features are pooled in
float32 and returned in input order as a float32 array ``[N, hidden]``. A raw text needs at least two tokens (as for
scoring).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.scoring.pooling import FeatureSpec, Pool
from unlearnkit.evaluation.scoring.passes import score_pairs, score_texts

Item = str | tuple[str, str] | QAExample


def layer_features(
    model,
    formatter: QAFormatter,
    items: Sequence[Item],
    layer: int,
    batch_size: int = 16,
    pool: Pool | None = None,
) -> np.ndarray:
    """``[N, hidden]`` float32: the mean over the pooled tokens of ``hidden_states[layer]`` for each item.

    ``items`` is a list of QA pairs (tuples or ``QAExample``) or a list of strings, not a mix. ``pool`` is
    ``"answer"`` or ``"all"`` (``None``: ``"answer"`` for QA pairs, ``"all"`` for texts); see the module docstring
    for the meaning of ``layer`` and ``pool``. The model's train/eval mode is restored afterwards.
    """
    if len(items) == 0:
        raise UnlearnkitError("no examples to extract features from: pass at least one QA pair or text")
    if pool not in (None, "answer", "all"):
        raise UnlearnkitError(f"pool={pool!r} is not supported: use pool='answer' or pool='all'")
    is_text = [isinstance(item, str) for item in items]
    if all(is_text):
        if pool == "answer":
            raise UnlearnkitError("pool='answer' needs QA pairs, but raw texts were given: use pool='all' for texts")
        scores = score_texts(model, formatter, items, batch_size, features=FeatureSpec(layer, "all"))
        keys: list = list(items)
    elif any(is_text):
        raise UnlearnkitError("items mix raw texts and QA pairs: pass a list of (question, answer) pairs or of strings")
    else:
        keys = [_pair(item) for item in items]
        scores = score_pairs(model, formatter, keys, batch_size, features=FeatureSpec(layer, pool or "answer"))
    return np.asarray([scores[key].features for key in keys], dtype=np.float32)


def _pair(item) -> tuple[str, str]:
    if isinstance(item, QAExample):
        return item.question, item.answer
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item):
        return item[0], item[1]
    raise UnlearnkitError(
        f"cannot read {item!r} as a QA pair: pass (question, answer) tuples of strings, QAExample objects or strings"
    )
