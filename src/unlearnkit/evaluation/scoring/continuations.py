"""Log-likelihoods of continuations after a context, tokenized as lm-evaluation-harness's Hugging Face model does.

lm-evaluation-harness (``lm_eval/models/huggingface.py``, ``HFLM._encode_pair`` and ``loglikelihood``) scores a
(context, continuation) request like this, and so does :func:`score_continuations`:

1. trailing whitespace of the context moves to the front of the continuation;
2. ``whole = encode(context + continuation)``, ``context_ids = encode(context)``, and the continuation's tokens are
   ``whole[len(context_ids):]`` (so a merge across the boundary is tokenized as in the whole string);
3. no special tokens are added (its default ``add_bos_token=False`` for causal models);
4. sequences longer than the context window keep their last tokens (here the last ``formatter.max_length``).

The log-likelihood of a continuation is the sum of its tokens' log-probabilities
(``sum(PairScore.token_logprobs)``).
"""

from __future__ import annotations

from typing import Sequence

from unlearnkit.data.formatting import IGNORE_INDEX, Encoded, QAFormatter
from unlearnkit.errors import DataError
from unlearnkit.evaluation.scoring.passes import PairScore, score_encoded
from unlearnkit.evaluation.scoring.store import ResultStore


def encode_continuation(tokenizer, context: str, continuation: str, max_length: int) -> Encoded:
    """(context, continuation) as one sequence whose scored part is the continuation (steps 1–4 above)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = list(tokenizer(context + continuation, add_special_tokens=False)["input_ids"])
    context_length = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    if context_length < 1 or context_length >= len(whole):
        raise DataError(f"the context {context[-40:]!r} or its continuation {continuation!r} encodes to no tokens: "
                        "both need at least one")
    cut = max(0, len(whole) - max_length)
    if cut >= context_length:
        raise DataError(f"the continuation {continuation[:40]!r} alone is longer than max_length={max_length} "
                        "tokens: raise model.max_length")
    ids, prompt_length = whole[cut:], context_length - cut
    return Encoded(ids, [IGNORE_INDEX] * prompt_length + ids[prompt_length:], prompt_length)


def score_continuations(model, formatter: QAFormatter, requests: Sequence[tuple[str, str]], batch_size: int = 16,
                        progress: bool = False, store: ResultStore | None = None) -> dict[tuple[str, str], PairScore]:
    """Teacher-forced scores of each distinct (context, continuation), keyed by it; the continuations of one context
    share its forward pass (prompt sharing)."""
    encoded = {(context, continuation): encode_continuation(formatter.tokenizer, context, continuation,
                                                            formatter.max_length)
               for context, continuation in dict.fromkeys(requests)}
    return score_encoded(model, formatter, encoded, batch_size, progress, store, "scoring choices")
