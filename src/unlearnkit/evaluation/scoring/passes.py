"""Run the model once for everything the metrics need: teacher-forced answer scores and greedy generations.

Metrics never call the model (see :mod:`unlearnkit.evaluation.metrics.tofu`). The suite plans every
(question, answer) pair and every question it needs, and this module computes each one once:

- :func:`score_pairs` de-duplicates the pairs, sorts them by tokenized length, and runs them in right-padded
  batches of similar length; answers that share a question run its prompt once, on a KV cache
  (:mod:`~unlearnkit.evaluation.scoring.prompt_sharing`). For each pair it keeps, per answer token (the EOS token
  included), the log-probability of the label under teacher forcing and whether the teacher-forced argmax equals
  the label.
- :func:`score_texts` does the same for raw texts (MUSE-style corpora): every token after the first is scored.
  Both run through one batching loop (:func:`_score_encoded`), with the same store and process-group sharding.
- with a :class:`~unlearnkit.evaluation.scoring.pooling.FeatureSpec`, the same forward pass also returns the hidden states
  and each item keeps its mean-pooled feature vector at the chosen layer (the representation metrics' input), so
  log-probs, Min-K%++ moments and features come from one pass per sequence.
- :func:`generate_answers` runs left-padded greedy decoding with continuous batching where the model allows it
  (:mod:`~unlearnkit.evaluation.scoring.greedy`), stops each row at an end token, and decodes only the new tokens, without
  special tokens. Given the tokens an answer is known to start with
  (:func:`greedy_prefix`: the scoring pass already showed the model writing the first tokens of its gold answer),
  it decodes only the rest.

Follows OpenUnlearning (locuslab/open-unlearning) ``src/evals/metrics/utils.py``: ``evaluate_probability`` (mean
answer NLL, ``prob = exp(-avg_loss)``), ``tokenwise_logprobs`` / ``tokenwise_vocab_logprobs`` (per-token scores)
and ``eval_text_similarity`` (left-padded greedy generation, decoded with ``skip_special_tokens=True`` and
``clean_up_tokenization_spaces=True``, then ``strip()``-ed). Differences, on purpose:

- one forward pass per pair feeds every metric that needs it (the reference runs one pass per metric);
- answer labels come from :class:`~unlearnkit.data.formatting.QAFormatter`, which never masks the real EOS token
  (the old TOFU code set ``pad = eos`` and masked it); OpenUnlearning also keeps the EOS in its labels, so the
  answer NLL is the same quantity. :class:`PairScore` records whether the last scored token is that EOS, so that
  the metrics that the reference computes without the EOS prediction (exact memorization, extraction strength,
  Min-K%) can drop it — see :attr:`PairScore.logprobs_before_eos`.
"""

from __future__ import annotations

import base64
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Collection, Hashable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from unlearnkit.data.formatting import Encoded, QAFormatter, collate
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.scoring.distributed import gather_dicts, load_all_before_any_append, my_batches
from unlearnkit.evaluation.scoring.pooling import FeatureSpec, pooled_features
from unlearnkit.evaluation.scoring.prompt_sharing import (
    cache_argument,
    call_cost,
    forward_shared_prompts,
    has_shared_prompts,
    prompt_of,
    shared_prompt_batches,
)
from unlearnkit.evaluation.scoring.store import ResultStore, item_key
from unlearnkit.evaluation.scoring.shared_prefix import shared_prefix

K = TypeVar("K", bound=Hashable)


@dataclass
class PairScore:
    """Teacher-forced scores of one answer given its question.

    ``token_logprobs[t]`` = log p(a_t | q, a_<t) for every answer token, the final EOS included;
    ``argmax_match[t]`` = whether argmax_v p(v | q, a_<t) equals a_t. ``ends_with_eos`` says whether the last
    scored token is the EOS token (False only when ``max_length`` truncated the answer).
    """

    token_logprobs: list[float]
    argmax_match: list[bool]
    ends_with_eos: bool
    token_mu: list[float] | None = None  # Min-K%++ moments of the model's next-token distribution, same positions
    token_sigma: list[float] | None = None
    features: list[float] | None = None  # mean-pooled hidden state at the requested layer (FeatureSpec)

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def mean_nll(self) -> float:
        """ℓ̄(a|q): mean negative log-likelihood over the answer tokens (EOS included)."""
        return -math.fsum(self.token_logprobs) / len(self.token_logprobs)

    @property
    def prob(self) -> float:
        """P(a|q) = exp(−ℓ̄(a|q)), the length-normalised answer probability."""
        return math.exp(-self.mean_nll)

    @property
    def logprobs_before_eos(self) -> list[float]:
        """Token log-probs without the final EOS prediction (OpenUnlearning's ``tokenwise_logprobs`` drops it)."""
        return self.token_logprobs[:-1] if self.ends_with_eos else self.token_logprobs

    @property
    def matches_before_eos(self) -> list[bool]:
        """Argmax matches without the final EOS prediction (as OpenUnlearning's EM and ES see them)."""
        return self.argmax_match[:-1] if self.ends_with_eos else self.argmax_match


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def evaluation_mode(model) -> Iterator[None]:
    """``model.eval()`` under ``torch.inference_mode()``; the previous train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _unique(items: Sequence) -> list:
    return list(dict.fromkeys(items))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UnlearnkitError(f"batch_size must be at least 1, got {batch_size}: pass a positive batch size")


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def score_pairs(
    model,
    formatter: QAFormatter,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 16,
    progress: bool = False,
    store: ResultStore | None = None,
    moments: bool | Collection[tuple[str, str]] = False,
    features: FeatureSpec | None = None,
    share_prompts: bool = True,
) -> dict[tuple[str, str], PairScore]:
    """Teacher-forced scores of every distinct (question, answer) pair, each computed once.

    Pairs are encoded with ``formatter.encode``, sorted by length (longest first) and scored in right-padded
    batches of ``batch_size``; right padding never changes the logits of the real tokens of a causal model, so
    each pair's scores are those of the pair run alone (tested). Log-probabilities are taken in float32 from the
    model's logits and returned as Python floats.

    With a ``store``, batches already stored are read instead of computed, and each finished batch is stored
    (an interrupted evaluation resumes). In a process group the batches are dealt out across processes and the
    results gathered on every process (see :mod:`unlearnkit.evaluation.scoring.distributed`). ``moments`` adds, in the same
    pass, the mean and standard deviation of log p under the model's next-token distribution at each answer
    position (:func:`unlearnkit.evaluation.scoring.passes.next_token_moments`, for Min-K%++), for every pair (``True``) or for
    the pairs in a collection (the others run in the same batches without them). ``features`` adds, in the same
    pass, each pair's mean-pooled hidden state (:class:`~unlearnkit.evaluation.scoring.pooling.FeatureSpec`).

    ``share_prompts`` (the default): when answers share a question and the model takes a KV cache, the opening all
    prompts share runs once (:mod:`unlearnkit.evaluation.scoring.shared_prefix`) and each batch runs each of its prompts
    once and its answers on the prompt's cache (:mod:`unlearnkit.evaluation.scoring.prompt_sharing`; the same log-probs as
    full sequences up to the dtype's rounding — tested). ``share_prompts=False`` runs every sequence whole.
    Features pooled over ``"all"`` tokens need the full sequences and turn it off.
    """
    _check_batch_size(batch_size)
    encoded = {pair: formatter.encode(*pair) for pair in _unique([(q, a) for q, a in pairs])}
    for pair, enc in encoded.items():
        if enc.prompt_length < 1:
            raise UnlearnkitError(f"the prompt of question {pair[0]!r} encodes to no tokens: check the formatter")
    return _score_encoded(model, formatter, encoded, batch_size, progress, store, moments, features, "scoring answers",
                          share_prompts)


def score_texts(
    model,
    formatter: QAFormatter,
    texts: Sequence[str],
    batch_size: int = 16,
    progress: bool = False,
    store: ResultStore | None = None,
    moments: bool = False,
    features: FeatureSpec | None = None,
) -> dict[str, PairScore]:
    """Teacher-forced scores of every token after the first of each distinct raw text, each text scored once.

    A text is tokenized with the tokenizer's own special tokens (a BOS when it adds one), truncated to
    ``formatter.max_length`` tokens, and no EOS is appended (:func:`unlearnkit.evaluation.scoring.passes.encode_item`, the
    same encoding the gradnorm statistic uses); token t is scored from tokens 0..t-1, so a text of T tokens gets
    T − 1 scores: ``token_logprobs[t-1]`` = log p(x_t | x_<t) for t = 1..T−1. This is what MUSE's PrivLeak reads
    (swj0419/muse_bench, Min-K% over the log-probs of ``input_ids[0][1:]``) and OpenUnlearning's MIA on raw
    text. ``ends_with_eos`` is True only if the tokenizer itself appends an EOS token (the membership statistics then
    drop that prediction, as for answers). A text that encodes to fewer than two tokens raises
    :class:`UnlearnkitError`. Batching, ``store``, process groups, ``moments`` and ``features`` work as in
    :func:`score_pairs` (one shared loop; a text's features pool every token, ``pool="all"``); the keys of the result
    are the texts.
    """
    _check_batch_size(batch_size)
    if features is not None and features.pool != "all":
        raise UnlearnkitError("pool='answer' needs QA pairs, but raw texts were given: use pool='all' for texts")
    texts = _unique(list(texts))
    for text in texts:
        if not isinstance(text, str):
            raise UnlearnkitError(f"score_texts takes raw text strings, got {type(text).__name__}: pass str texts "
                                  "(score (question, answer) pairs with score_pairs)")
    encoded = {text: encode_item(formatter, text) for text in texts}
    return _score_encoded(model, formatter, encoded, batch_size, progress, store, moments, features, "scoring texts")


def score_encoded(model, formatter: QAFormatter, encoded: dict[K, Encoded], batch_size: int = 16,
                  progress: bool = False, store: ResultStore | None = None, desc: str = "scoring") -> dict[K, PairScore]:
    """Scores of items the caller tokenized itself (keyed as it likes): each item's tokens from ``prompt_length``
    on, through the same batching loop, store and prompt sharing as :func:`score_pairs`."""
    _check_batch_size(batch_size)
    return _score_encoded(model, formatter, encoded, batch_size, progress, store, False, None, desc, True)


def _score_encoded(
    model,
    formatter: QAFormatter,
    encoded: dict[K, Encoded],
    batch_size: int,
    progress: bool,
    store: ResultStore | None,
    moments: bool | Collection[K],
    features: FeatureSpec | None,
    desc: str,
    share_prompts: bool = False,
) -> dict[K, PairScore]:
    """Scores of every encoded item (its tokens from ``prompt_length`` on): the one batching loop of this module.

    Items are sorted by length (longest first) and run in right-padded batches (with ``share_prompts``, batches
    that run each prompt once, after the opening all prompts share: :mod:`unlearnkit.evaluation.scoring.prompt_sharing`,
    :mod:`unlearnkit.evaluation.scoring.shared_prefix`); batches whose
    items are all in the ``store`` are read, the others computed (dealt out across a process group) and appended to
    the store batch by batch. Keys are stored as :func:`~unlearnkit.evaluation.scoring.store.item_key` of the item's
    key. With ``features`` the forward pass also returns the hidden states, pooled per row in the same pass.
    """
    stored = load_all_before_any_append(store)
    done = {key: _from_stored(stored[item_key(key)]) for key in encoded if item_key(key) in stored}
    with_moments = set(encoded) if moments is True else set(moments or ())
    # stored scores without moments cannot serve a request for them
    done = {key: score for key, score in done.items() if key not in with_moments or score.token_mu is not None}
    if features is not None:  # nor can stored scores without features
        done = {key: score for key, score in done.items() if score.features is not None}
    cache_name = cache_argument(model) if share_prompts else None
    share = (cache_name is not None and (features is None or features.pool == "answer")
             and has_shared_prompts(encoded))
    device = model_device(model)
    opening = None
    if share:  # the opening every prompt shares runs once for all batches
        opening = shared_prefix(model, cache_name, (prompt_of(enc) for enc in encoded.values()), device)
        ordered_batches = shared_prompt_batches(encoded, batch_size, call_cost(device), len(opening or ()),
                                                answers=features is None)
    else:
        ordered = sorted(encoded, key=lambda key: len(encoded[key].input_ids), reverse=True)
        ordered_batches = list(_chunks(ordered, batch_size))
    batches = [b for b in ordered_batches if not all(key in done for key in b)]
    mine = my_batches(batches)
    computed: dict[K, PairScore] = {}
    with evaluation_mode(model):
        for batch_keys in _progress(mine, len(mine), desc, progress):
            examples = [encoded[key] for key in batch_keys]
            if share:
                steps, outputs, pooled = forward_shared_prompts(model, examples, formatter.pad_token_id, device,
                                                                features is not None, cache_name, opening,
                                                                call_cost(device))
            else:
                batch = collate(examples, formatter.pad_token_id, padding_side="right")
                outputs = model(input_ids=batch["input_ids"].to(device),
                                attention_mask=batch["attention_mask"].to(device),
                                output_hidden_states=features is not None)
                steps = [outputs.logits[row, enc.prompt_length - 1 : len(enc.input_ids) - 1]
                         for row, enc in enumerate(examples)]
                pooled = examples
            rows = {key: _score_row(step, enc, formatter.eos_token_id, key in with_moments)
                    for key, step, enc in zip(batch_keys, steps, examples)}
            if features is not None:
                for key, vector in zip(batch_keys, pooled_features(outputs, pooled, features).cpu().tolist()):
                    rows[key].features = vector
            if store is not None:
                store.append({item_key(key): _to_stored(score) for key, score in rows.items()})
            computed.update(rows)
    return {**done, **gather_dicts(computed)}


def _to_stored(score: PairScore) -> dict:
    """A score as a JSON record; a feature vector as the base64 of its float32 bytes (exact, ~4x smaller than text)."""
    record = asdict(score)
    if score.features is not None:
        record["features"] = base64.b64encode(np.asarray(score.features, dtype=np.float32).tobytes()).decode("ascii")
    return record


def _from_stored(record: dict) -> PairScore:
    features = record.get("features")
    if isinstance(features, str):
        record = {**record, "features": np.frombuffer(base64.b64decode(features), dtype=np.float32).tolist()}
    return PairScore(**record)


def _score_row(step_logits: torch.Tensor, enc: Encoded, eos_token_id: int, moments: bool = False) -> PairScore:
    """Scores of one example's scored tokens ``enc.input_ids[prompt_length:]`` from the logits that predict them."""
    step_logits = step_logits.float()
    targets = torch.tensor(enc.input_ids[enc.prompt_length :], device=step_logits.device)
    logprobs = torch.log_softmax(step_logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    matches = step_logits.argmax(dim=-1) == targets
    mu = sigma = None
    if moments:
        mu_t, sigma_t = next_token_moments(step_logits)
        mu, sigma = mu_t.double().cpu().tolist(), sigma_t.double().cpu().tolist()
    return PairScore(
        token_logprobs=logprobs.double().cpu().tolist(),
        argmax_match=matches.cpu().tolist(),
        ends_with_eos=enc.input_ids[-1] == eos_token_id,
        token_mu=mu,
        token_sigma=sigma,
    )


def next_token_moments(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of log p under the model's own next-token distribution, per position.

    For one position with p = softmax(logits) over the vocabulary: μ = Σ_v p_v log p_v and
    σ = sqrt(Σ_v p_v (log p_v − μ)²), which equals the reference's Σ_v p_v (log p_v)² − μ² (Min-K%++,
    arXiv:2404.02936; OpenUnlearning ``mia/min_k_plus_plus.py``) but is computed in the centred form, which
    does not lose precision to cancellation. Tokens with p_v = 0 (logits of −inf) contribute 0, not NaN.
    ``logits``: shape (..., V); returns (μ, σ) of shape (...) in float32, or float64 for float64 logits. σ is not
    clamped here; :func:`min_k_plus_plus_score` applies the reference's clamp.
    """
    logits = torch.as_tensor(logits)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    present = p > 0
    mu = torch.where(present, p * logp, torch.zeros_like(p)).sum(-1)
    centred = torch.where(present, logp - mu.unsqueeze(-1), torch.zeros_like(p))
    variance = (p * centred.square()).sum(-1)
    return mu, variance.clamp(min=0).sqrt()


def encode_item(formatter: QAFormatter, item) -> Encoded:
    """A (question, answer) pair → ``formatter.encode``; a raw text → its tokens, every token after the first scored.

    Raw text is tokenized with the tokenizer's own special tokens (a BOS when it adds one), truncated to
    ``formatter.max_length``, and no EOS is appended; each token is predicted from the ones before it.
    """
    if isinstance(item, Encoded):
        return item
    if isinstance(item, str):
        return formatter.encode_text(item)
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item):
        return formatter.encode(item[0], item[1])
    raise UnlearnkitError(
        f"cannot score {type(item).__name__} {item!r:.60}: pass (question, answer) pairs, raw text strings or Encoded"
    )
