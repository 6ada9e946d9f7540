"""Teacher-forced scoring that runs each shared prefix once: a prompt for all its answers, and the tokens several
answers start with.

The TOFU suite scores up to seven answers after one question (the gold, the paraphrased and five perturbed
answers), and with a chat template the prompt is often longer than the answer. The perturbed answers are the
paraphrased one with a fact changed, so they also start alike ("The birthplace of Basil Mahfouz Al-Kuwaiti is in
the city of" Kuwait / Tokyo / Paris …). How much this saves on real TOFU is measured in docs/benchmarks.md §4.

A batch runs in levels (:func:`forward_shared_prompts`): at cut positions ``c_1 < … < c_k``, common to all its
rows, level ``k`` runs each distinct prefix ``seq[:c_k]`` once, over positions ``c_(k−1)..c_k``, on a copy of its
parent prefix's KV cache; the last pass runs every row from ``c_k`` on, right-padded. The cuts are chosen per batch
where they run the fewest tokens, a forward call counting as a few dozen tokens on a CPU (:func:`_levels`), and the
batches are cut from the rows (each question's answers kept together where they fit) by a dynamic programme over
the same cost (:func:`shared_prompt_batches`). The levels run the output layer only on the positions whose logits predict a scored token (``logits_to_keep``), and a
position shared by several answers yields its logits once. The opening every prompt starts with (a chat template's
system prompt) runs once for all batches, and the first level starts from its cache
(:mod:`~unlearnkit.evaluation.scoring.shared_prefix`).

Exactness: the cached parts of a level have one length, so neither they nor the cache carry padding; the last
pass's rows are right-padded, the positions are the cache's own, and each token sees the same keys at the same
positions (and cache columns) as in a full forward pass of its sequence: the same computation in exact arithmetic,
with no hand-made positions or masks with holes. The matrix products run on other shapes, though (a level of a few
rows, a last pass of the rows' rests), and kernels may round some shapes differently. On the CPU a product of 1 to
3 rows takes another kernel than a larger one, so no pass runs fewer than
:data:`~unlearnkit.evaluation.scoring.shared_prefix.MIN_PASS_POSITIONS` positions (nor the output layer fewer rows);
the log-probs equal a full pass's up to the rounding of the model's dtype (docs/benchmarks.md §4 records where they
are bit-identical). The same holds between any two batchings under SDPA attention. Results stay deterministic: the batches
and their levels are a function of the items, so a repeated, resumed or sharded evaluation gets the same bits.
"""

from __future__ import annotations

import inspect
import math
from typing import Hashable, Sequence, TypeVar

import torch

from unlearnkit.data.formatting import Encoded, collate
from unlearnkit.evaluation.scoring.shared_prefix import MIN_PASS_POSITIONS, SharedPrefix, shared_length

K = TypeVar("K", bound=Hashable)
# the fixed cost of one forward call in tokens' worth of compute: on a CPU a few dozen (docs/benchmarks.md §4), so
# batches with less padding win over full ones and a level pays for itself once it spares a few dozen tokens; on an
# accelerator a call costs as much as hundreds of tokens (kernel launches), and full batches with few levels win
CALL_COST = 24.0
ACCELERATOR_CALL_COST = 512.0


def call_cost(device: torch.device) -> float:
    """The fixed cost of a forward call on ``device``, in tokens' worth (see :data:`CALL_COST`)."""
    return CALL_COST if device.type == "cpu" else ACCELERATOR_CALL_COST


def cache_argument(model) -> str | None:
    """The name under which ``model``'s forward takes a KV cache (``cache`` in transformers ≥ 5.2x,
    ``past_key_values`` before), or None when prompts cannot be shared: not a decoder-only LM whose forward takes a
    cache and ``logits_to_keep``, or one whose cache holds more than attention keys and values (hybrid and
    linear-attention models keep convolution / recurrent states that cannot be copied row by row here).

    Decided from the model and its config alone, so every process of a group decides the same. A PEFT model counts
    through its base model, unless its adapter is a prompt-learning one (prefix tuning feeds its own cache).
    """
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or not _plain_kv_cache(config):
        return None
    try:
        parameters = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # a scripted or built-in forward
        return None
    if "logits_to_keep" not in parameters:
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _plain_kv_cache(config) -> bool:
    """Whether the model's dynamic cache is made of key/value layers only (full or sliding-window attention)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

        layers = DynamicCache(config=config).layers
    except Exception:  # an older transformers, or a config the dynamic cache does not understand: no sharing
        return False
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


def prompt_of(enc: Encoded) -> tuple[int, ...]:
    return tuple(enc.input_ids[: enc.prompt_length])


def has_shared_prompts(encoded: dict[K, Encoded]) -> bool:
    """Whether at least two items start with the same prompt (otherwise sharing saves nothing)."""
    seen: set[tuple[int, ...]] = set()
    for enc in encoded.values():
        prompt = prompt_of(enc)
        if prompt in seen:
            return True
        seen.add(prompt)
    return False


def shared_prompt_batches(encoded: dict[K, Encoded], batch_size: int, call_cost: float = CALL_COST,
                          opening: int = 0, answers: bool = True) -> list[list[K]]:
    """Batches of at most ``batch_size`` items, each question's answers kept together where they fit.

    Items are grouped by prompt, each group's answers ordered longest first, and the groups ordered by their longest
    sequence (prompt + answer, longest first: a batch's last pass is padded to its longest row), then cut into
    batches where they run the fewest tokens, each batch in its cheapest levels (:func:`_cheapest_cuts`; a group
    cut in two runs its prompt in both batches). ``answers``: whether levels may reach into the answers (not when
    the answers' hidden states are pooled, which needs them all in the last pass). Deterministic for a given
    ``encoded`` order, so every process of a group deals out the same batches.
    """
    groups: dict[tuple[int, ...], list[K]] = {}
    for key, enc in encoded.items():
        groups.setdefault(prompt_of(enc), []).append(key)
    for keys in groups.values():
        keys.sort(key=lambda key: len(encoded[key].input_ids), reverse=True)
    ordered = sorted(groups.values(), key=lambda keys: len(encoded[keys[0]].input_ids), reverse=True)
    rows = [key for keys in ordered for key in keys]
    return _cheapest_cuts(rows, encoded, batch_size, call_cost, opening, answers)


def batch_levels(examples: Sequence[Encoded], opening: int = 0, call_cost: float = CALL_COST,
                 answers: bool = True) -> tuple[int, ...]:
    """The cut positions :func:`forward_shared_prompts` runs a batch's levels at (:func:`_levels`)."""
    seqs = [enc.input_ids for enc in examples]
    table = _shared_lengths(seqs, len(seqs))
    shared = [max((table[i][j - i - 1] for i in range(j)), default=-1) for j in range(len(seqs))]
    return _levels(shared, [len(seq) for seq in seqs], _cap(examples, answers), opening, call_cost)[1]


def _cap(examples: Sequence[Encoded], answers: bool) -> int:
    """The furthest a batch's cut may go: every row keeps a token for the last pass, and without ``answers`` every
    answer token (and the prompt token that predicts the first) stays in it."""
    if answers:
        return min(len(enc.input_ids) for enc in examples) - 1
    return min(enc.prompt_length for enc in examples) - 1


def _shared_lengths(seqs: Sequence[Sequence[int]], window: int) -> list[list[int]]:
    """``table[i][d - 1]``: how many leading tokens ``seqs[i]`` and ``seqs[i + d]`` share, for 0 < d < ``window``."""
    return [[shared_length(seq, other) for other in seqs[i + 1 : i + window]] for i, seq in enumerate(seqs)]


def _levels(shared: Sequence[int], lengths: Sequence[int], cap: int, opening: int,
            call_cost: float) -> tuple[float, tuple[int, ...]]:
    """A batch's cheapest levels: (its cost in tokens' worth, the cut positions ``c_1 < … < c_k``).

    Level ``k`` runs each distinct prefix ``seq[:c_k]`` of the batch's rows once, over positions ``c_(k−1)..c_k``
    (``c_0``: the shared ``opening``); the last pass runs every row from ``c_k`` on, padded to the longest. Cost:
    ``D(c_k)·(c_k − c_(k−1))`` per level and ``rows·(longest − c_k)`` for the last pass, where ``D(c)`` is the
    number of distinct prefixes of length ``c``, plus ``call_cost`` per forward call. ``shared[j]``: the longest
    prefix row ``j`` shares with an earlier row of the batch (−1 for the first), so ``D(c) = #{j : shared[j] < c}``;
    ``cap``: the furthest a cut may go. Only cuts at some ``shared[j]`` or at ``cap`` need trying: ``D`` is constant
    between two of them, and moving a cut up to the next moves tokens to it from a level or pass of at least as many
    rows. Dynamic programming over those cuts; no level or last pass of fewer than :data:`MIN_PASS_POSITIONS`
    positions is planned (but the last pass without levels: nothing can replace it).
    """
    rows, longest = len(lengths), max(lengths)
    candidates = sorted({min(s, cap) for s in shared if min(s, cap) > opening} | ({cap} if cap > opening else set()))
    ends, best, back = [opening], [0.0], [-1]
    for cut in candidates:
        distinct = sum(1 for s in shared if s < cut)
        options = [best[i] + distinct * (cut - ends[i]) + call_cost if cut - ends[i] >= MIN_PASS_POSITIONS
                   else math.inf for i in range(len(ends))]
        i = min(range(len(options)), key=options.__getitem__)
        ends.append(cut)
        best.append(options[i])
        back.append(i)
    totals = [best[i] + rows * (longest - ends[i]) if i == 0 or longest - ends[i] >= MIN_PASS_POSITIONS
              else math.inf for i in range(len(ends))]
    i = min(range(len(totals)), key=totals.__getitem__)
    cost, cuts = totals[i] + call_cost, []
    while i > 0:
        cuts.append(ends[i])
        i = back[i]
    return cost, tuple(cuts[::-1])


def _cheapest_cuts(rows: list[K], encoded: dict[K, Encoded], batch_size: int, call_cost: float,
                   opening: int = 0, answers: bool = True) -> list[list[K]]:
    """``rows`` (in order) cut into consecutive batches of at most ``batch_size`` rows that run the fewest tokens in
    all, each batch in its cheapest levels (:func:`_levels`).

    Filling every batch to ``batch_size`` pads short answers to long ones (a fifth of the tokens run on TOFU with a
    chat template); a cut costs a prompt run again when it splits a question's answers, and calls. Dynamic
    programming over the cut points, O(len(rows) × batch_size²) calls of :func:`_levels`'s inner loop.
    """
    examples = [encoded[key] for key in rows]
    table = _shared_lengths([enc.input_ids for enc in examples], batch_size)
    best = [0.0] + [math.inf] * len(rows)  # best[j]: the cheapest cost of rows[:j]
    start_of = [0] * (len(rows) + 1)
    for end in range(1, len(rows) + 1):
        shared = [-1] * (end - max(0, end - batch_size))  # for rows[start:end], kept aligned at the end
        lengths: list[int] = []
        cap = math.inf
        for start in range(end - 1, max(-1, end - batch_size - 1), -1):
            offset = len(shared) - (end - start)  # shared[offset] is rows[start]'s entry
            for j in range(start + 1, end):  # rows[start] now comes first: the later rows may share more with it
                shared[offset + j - start] = max(shared[offset + j - start], table[start][j - start - 1])
            lengths.append(len(examples[start].input_ids))
            cap = min(cap, _cap([examples[start]], answers))
            cost = best[start] + _levels(shared[offset:], lengths, cap, opening, call_cost)[0]
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    batches, end = [], len(rows)
    while end > 0:
        batches.append(rows[start_of[end] : end])
        end = start_of[end]
    return batches[::-1]


def forward_shared_prompts(
    model,
    examples: Sequence[Encoded],
    pad_token_id: int,
    device: torch.device,
    output_hidden_states: bool,
    cache_name: str,
    shared: SharedPrefix | None = None,
    call_cost: float = CALL_COST,
) -> tuple[list[torch.Tensor], object, list[Encoded]]:
    """Run a batch from :func:`shared_prompt_batches` in its levels (:func:`batch_levels`): each distinct prefix of
    a level once, on its parent's cache, then every row's rest on its prefix's cache.

    Returns, per example, the logits that predict its answer tokens (``[n_answer, V]``: row t predicts answer token
    t; the positions before the last cut come from the levels, the others from the last pass), the model outputs of
    the last pass, and the views of the examples that those outputs are aligned with (the tokens from the last cut
    on). With ``output_hidden_states`` (features pooled over the answer) the levels stay within the prompts, so every
    answer token is in the last pass. ``cache_name``: the forward's cache argument (:func:`cache_argument`).
    ``shared``: the opening every prompt starts with, already run (:mod:`~unlearnkit.evaluation.scoring.shared_prefix`); the
    first level (or the last pass) starts from its cache. ``call_cost``: as given to :func:`shared_prompt_batches`.
    """
    opening = len(shared) if shared is not None else 0
    if shared is not None and any(tuple(enc.input_ids[:opening]) != tuple(shared.ids)
                                  or enc.prompt_length <= opening for enc in examples):
        raise ValueError("forward_shared_prompts: a prompt does not start with the shared prefix and go on after it")
    cuts = batch_levels(examples, opening, call_cost, answers=not output_hidden_states)
    first_scored = min(enc.prompt_length for enc in examples) - 1  # no logits are needed before this position
    cache, parent_of_row, previous = None, [0] * len(examples), opening
    levels = []  # (first position with logits, logits [prefixes, kept, V], prefix of each row)
    for cut in cuts:
        prefixes: dict[tuple[int, ...], int] = {}
        prefix_of_row = [prefixes.setdefault(tuple(enc.input_ids[:cut]), len(prefixes)) for enc in examples]
        parent_of_prefix = [0] * len(prefixes)
        for row, prefix in enumerate(prefix_of_row):
            parent_of_prefix[prefix] = parent_of_row[row]
        cache = _copied(cache, shared, parent_of_prefix)
        ids = torch.tensor([prefix[previous:] for prefix in prefixes], dtype=torch.long, device=device)
        kept = cut - max(previous, first_scored)
        mask = torch.ones((len(prefixes), cut), dtype=torch.long, device=device)
        # the output layer where some row needs logits (on every position of the level when those would make a
        # product of fewer than MIN_PASS_POSITIONS rows), else on the last position alone
        keep = 1 if kept <= 0 else kept if len(prefixes) * kept >= MIN_PASS_POSITIONS else 0
        output = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=keep,
                       **({cache_name: cache} if cache is not None else {}))
        cache = output[cache_name]
        if kept > 0:
            levels.append((cut - kept, output.logits[:, -kept:], prefix_of_row))
        parent_of_row, previous = prefix_of_row, cut
    rests = [Encoded(enc.input_ids[previous:], enc.labels[previous:], max(enc.prompt_length - previous, 0))
             for enc in examples]
    batch = collate(rests, pad_token_id, padding_side="right")
    mask, cached = batch["attention_mask"], {}
    cache = _copied(cache, shared, parent_of_row)
    if cache is not None:
        mask = torch.cat([torch.ones((len(examples), previous), dtype=mask.dtype), mask], dim=1)
        cached = {cache_name: cache, "use_cache": True}
    outputs = model(input_ids=batch["input_ids"].to(device), attention_mask=mask.to(device),
                    output_hidden_states=output_hidden_states, **cached)
    step_logits = []
    for row, enc in enumerate(examples):  # the logits at positions prompt_length − 1 .. length − 2
        pieces = [logits[prefix_of_row[row], max(enc.prompt_length - 1 - first, 0) :]
                  for first, logits, prefix_of_row in levels if first + logits.shape[1] > enc.prompt_length - 1]
        pieces.append(outputs.logits[row, max(enc.prompt_length - 1 - previous, 0) : len(enc.input_ids) - 1 - previous])
        step_logits.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces))
    return step_logits, outputs, rests


def _copied(cache, shared: SharedPrefix | None, parents: list[int]):
    """The cache for the next pass: row i continues row ``parents[i]`` of ``cache`` (or of the shared opening's,
    before the first pass), or None when nothing is cached yet."""
    if cache is None:
        return shared.cache_for(len(parents)) if shared is not None else None
    # CPU indices index a cache on any device (also one spread over several GPUs by a device map)
    cache.batch_select_indices(torch.tensor(parents, dtype=torch.long))
    return cache
