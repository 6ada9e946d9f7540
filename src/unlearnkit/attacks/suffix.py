"""The adversarial-prompt attack: a universal suffix optimised GCG-style, and paraphrased questions.

Paper: "Universal and Transferable Adversarial Attacks on Aligned Language Models", Zou et al. 2023,
arXiv:2307.15043 (Greedy Coordinate Gradient, GCG; code ``llm-attacks/llm-attacks``, ``llm_attacks/gcg/
gcg_attack.py``: ``token_gradients``, ``sample_control``). Its use against unlearning: research/metrics.md §6
("a universal suffix optimised GCG-style to re-elicit forget answers; paraphrased questions"), methods.md §10 (DUA:
a universal suffix q minimising −log Π p(y_{i+1} | [x; q; y_≤i]) over several question/answer pairs; "attack
original" — optimise on the pre-unlearning model — transfers almost as well) and §17.

The suffix ``s = (s_1 … s_L)`` (token ids) goes into every prompt right after the question, inside the prompt: for
the plain template ``"Question: {q}<s>\\nAnswer: "``, for a chat template at the end of the user message. The
ids are inserted as they are (:func:`prompt_parts`), never decoded and re-tokenized; the default initial suffix
is the token ``" !"`` (or ``"!"``) repeated, so the plain prompt reads ``"Question: {q} ! ! …\\nAnswer: "``.

Objective, minimised over s (the mean answer NLL, the quantity behind forget_Q_A_Prob = exp(−NLL))::

    L(s) = (1/E) Σ_e  −(1/|a_e|) Σ_t log p(a_e,t | prompt_e(s), a_e,<t)

over the E examples, the answer's EOS token included (as :class:`~unlearnkit.evaluation.scoring.passes.PairScore`).

One GCG step (the paper's Algorithm 1 with one prompt set, i.e. its Algorithm 2 without progressive goals):

1. g = ∇_{e_{s_i}} L for the one-hot e_{s_i} of every suffix position i (the suffix embeddings are computed as
   one-hot × embedding matrix; :func:`suffix_gradient`), g ∈ R^{L×V}.
2. X_i = the ``top_k`` tokens with the most negative g_i, over the allowed tokens only (special tokens never).
3. ``candidates`` times: copy s, pick a position i uniformly and replace s_i by a token drawn uniformly from X_i
   (a seeded ``torch.Generator``).
4. Evaluate L for every candidate (batched, :func:`candidate_losses`) and keep the best one **only if its loss is
   below the current suffix's loss**; otherwise the current suffix stays. So the kept loss never increases.

Differences from llm-attacks, on purpose: (a) the reference always replaces the suffix by the best candidate,
even when it is worse, and tracks the best one seen; here a worse candidate is never kept (the same best suffix,
and a loss curve that is non-increasing); (b) the reference normalises each gradient row to unit norm, which does
not change a row's top-k and is skipped; (c) the reference spreads the substituted positions evenly over the batch
(``torch.arange(0, L, L / B)``) where the paper draws them uniformly — drawn uniformly here; (d) the reference drops
candidates whose decoded text re-tokenizes differently, needed only because it re-tokenizes text; ids are
inserted directly here, so :attr:`SuffixResult.suffix_text` is for reading (it may not re-tokenize to the same
ids); (e) the reference also excludes non-ASCII tokens by default; pass ``allowed_tokens=ascii_token_ids(tok)``
for that.

Evaluating with the suffix (transfer: optimise on one model, evaluate another): a suffix formatter
(:mod:`~unlearnkit.attacks.suffix_prompt`) inserts it in every prompt that scoring and generation read, so every
TOFU metric sees the suffixed prompt (:func:`evaluate_with_suffix`). :func:`evaluate_paraphrased` re-runs the
forget metrics with TOFU's paraphrased questions in place of the questions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import nn

from unlearnkit.attacks.evaluation import check_evaluator, evaluate_attacked, retarget
from unlearnkit.attacks.suffix_prompt import SuffixFormatter, prompt_parts
from unlearnkit.data.formatting import IGNORE_INDEX, QAFormatter
from unlearnkit.data.types import QAExample, Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.suites.result import EvalResult

SUFFIX_METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio")
PARAPHRASE_METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE")
FORGET_SPLIT_EXTRAS = ("extraction_strength", "exact_memorization")  # forget-split metrics without the prefix


# ---------------------------------------------------------------------------------------------------------------
# The objective and its gradient


@dataclass(frozen=True)
class _Prepared:
    """One example tokenized around the suffix slot: prompt = before + suffix + after, then the answer ids."""

    before: list[int]
    after: list[int]
    answer: list[int]


def _prepare(formatter: QAFormatter, examples: Sequence[QAExample], suffix_length: int) -> list[_Prepared]:
    if not examples:
        raise UnlearnkitError("no examples to attack: pass at least one forget example")
    out = []
    for ex in examples:
        parts = prompt_parts(formatter, ex.question)
        prompt_length = len(parts.before) + suffix_length + len(parts.after)
        if prompt_length > formatter.max_length:
            raise UnlearnkitError(f"the prompt of {ex.question!r} with a {suffix_length}-token suffix has "
                                  f"{prompt_length} tokens, over max_length={formatter.max_length}: raise the "
                                  f"formatter's max_length or shorten the suffix")
        # QAFormatter.encode's truncation, so that the loss equals the score under SuffixFormatter
        answer = formatter.answer_ids(ex.answer)[: max(1, formatter.max_length - prompt_length)]
        out.append(_Prepared(parts.before, parts.after, answer))
    return out


def _rows_nll(model: nn.Module, rows: list[tuple[list[int], int]], pad_token_id: int,
              embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Mean answer NLL of each row ``(ids, prompt_length)`` in one right-padded forward pass (float32 log-softmax).

    With ``embeds`` (shape [R, T_max, d], rows already embedded and padded) the model runs on those embeddings.
    Right padding leaves the logits of the real tokens of a causal model unchanged.
    """
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, start) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, start: len(ids)] = torch.tensor(ids[start:])
        mask[r, : len(ids)] = 1
    input_ids, labels, mask = input_ids.to(device), labels.to(device), mask.to(device)
    if embeds is None:
        logits = model(input_ids=input_ids, attention_mask=mask).logits
    else:
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token = logprobs.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return -(token * scored).sum(dim=1) / scored.sum(dim=1)


def _check_suffix(suffix_ids: torch.Tensor, vocab_rows: int) -> None:
    if suffix_ids.numel() and (int(suffix_ids.min()) < 0 or int(suffix_ids.max()) >= vocab_rows):
        raise UnlearnkitError(f"suffix ids must lie in [0, {vocab_rows}): pass ids of the model's vocabulary")


def _as_candidates(suffixes) -> torch.Tensor:
    tensor = torch.as_tensor(suffixes, dtype=torch.long).cpu()
    return tensor[None] if tensor.dim() == 1 else tensor


def _candidate_losses(model: nn.Module, prepared: list[_Prepared], candidates: torch.Tensor, pad_token_id: int,
                      batch_size: int) -> torch.Tensor:
    """[C, E] per-example answer NLL of every candidate; rows (candidate, example) go ``batch_size`` a pass."""
    rows = [(c, e) for c in range(len(candidates)) for e in range(len(prepared))]
    out = torch.empty(len(candidates), len(prepared), dtype=torch.float32)
    suffixes = candidates.tolist()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start: start + batch_size]
                built = []
                for c, e in chunk:
                    p = prepared[e]
                    prompt = [*p.before, *suffixes[c], *p.after]
                    built.append((prompt + p.answer, len(prompt)))
                nll = _rows_nll(model, built, pad_token_id).cpu()
                for (c, e), value in zip(chunk, nll):
                    out[c, e] = value
    finally:
        model.train(was_training)
    return out


def candidate_losses(model: nn.Module, formatter: QAFormatter, examples: Sequence[QAExample], suffixes,
                     batch_size: int = 16) -> torch.Tensor:
    """L(s) (module docstring) for every suffix in ``suffixes`` ([C, L] ids, or one [L] suffix), as a [C] tensor.

    The (suffix, example) sequences run right-padded, ``batch_size`` sequences a forward pass, under ``no_grad``
    in eval mode.
    """
    _check_positive(batch_size=batch_size)
    candidates = _as_candidates(suffixes)
    _check_suffix(candidates, model.get_input_embeddings().weight.shape[0])
    prepared = _prepare(formatter, examples, candidates.shape[1])
    return _candidate_losses(model, prepared, candidates, formatter.pad_token_id, batch_size).mean(dim=1)


def suffix_loss(model: nn.Module, formatter: QAFormatter, examples: Sequence[QAExample], suffix_ids: Sequence[int],
                batch_size: int = 16) -> float:
    """L(s) of one suffix on ``model``: the mean over ``examples`` of the mean answer NLL (EOS included) with the
    suffix in the prompt. Use it for transfer: optimise on one model, measure on another."""
    return float(candidate_losses(model, formatter, examples, list(suffix_ids), batch_size)[0])


def _suffix_gradient(model: nn.Module, prepared: list[_Prepared], suffix: torch.Tensor, pad_token_id: int,
                     batch_size: int) -> tuple[torch.Tensor, float]:
    """(∂L/∂one-hot as [L, V] float32, L) at ``suffix``; examples go ``batch_size`` a forward pass."""
    embedding = model.get_input_embeddings()
    weight = embedding.weight
    device = weight.device
    one_hot = torch.zeros(len(suffix), weight.shape[0], device=device, dtype=weight.dtype)
    one_hot[torch.arange(len(suffix)), suffix.to(device)] = 1.0
    one_hot.requires_grad_(True)
    grad = torch.zeros(one_hot.shape, dtype=torch.float32, device=device)
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for start in range(0, len(prepared), batch_size):
                suffix_embeds = one_hot @ weight  # [L, d]
                chunk = prepared[start: start + batch_size]
                rows, pieces = [], []
                for p in chunk:
                    prompt_length = len(p.before) + len(suffix) + len(p.after)
                    ids = [*p.before, *suffix.tolist(), *p.after, *p.answer]
                    rows.append((ids, prompt_length))
                    tokens = torch.tensor(ids, device=device)
                    cut = len(p.before)
                    pieces.append(torch.cat([embedding(tokens[:cut]), suffix_embeds,
                                             embedding(tokens[cut + len(suffix):])]))
                width = max(len(ids) for ids, _ in rows)
                embeds = torch.stack([torch.cat([x, x.new_zeros(width - len(x), x.shape[1])]) for x in pieces])
                loss = _rows_nll(model, rows, pad_token_id, embeds).sum() / len(prepared)
                (part,) = torch.autograd.grad(loss, one_hot)
                grad += part.float()
                total += float(loss.detach())
    finally:
        model.train(was_training)
    return grad, total


def suffix_gradient(model: nn.Module, formatter: QAFormatter, examples: Sequence[QAExample],
                    suffix_ids: Sequence[int], batch_size: int = 16) -> torch.Tensor:
    """∂L/∂x as an [L, V] float32 tensor, where x is the one-hot matrix of the suffix (x_{i,v} = 1 iff s_i = v)
    and the suffix embeddings are x·W_E (W_E the input embedding matrix, V its rows). Row i is W_E · ∂L/∂e_i with
    e_i the embedding at suffix position i (the chain rule; the paper's token gradient ∇_{e_{x_i}} L)."""
    _check_positive(batch_size=batch_size)
    suffix = torch.as_tensor(list(suffix_ids), dtype=torch.long)
    _check_suffix(suffix, model.get_input_embeddings().weight.shape[0])
    prepared = _prepare(formatter, examples, len(suffix))
    return _suffix_gradient(model, prepared, suffix, formatter.pad_token_id, batch_size)[0].cpu()


# ---------------------------------------------------------------------------------------------------------------
# Candidates and the optimisation loop


def default_allowed_tokens(tokenizer, vocab_rows: int) -> list[int]:
    """Every token id of the tokenizer (and of the model's ``vocab_rows`` embedding rows) except special tokens."""
    special = set(tokenizer.all_special_ids)
    return [t for t in range(min(len(tokenizer), vocab_rows)) if t not in special]


def ascii_token_ids(tokenizer) -> list[int]:
    """Non-special tokens that decode to printable ASCII text (llm-attacks' default ``allow_non_ascii=False``)."""
    special = set(tokenizer.all_special_ids)
    out = []
    for t in range(len(tokenizer)):
        text = tokenizer.decode([t])
        if t not in special and text and text.isascii() and text.isprintable():
            out.append(t)
    return out


def sample_candidates(suffix: torch.Tensor, gradient: torch.Tensor, allowed: torch.Tensor, top_k: int,
                      count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` single-token substitutions of ``suffix`` ([count, L]): position i ~ Uniform{1..L}, new token ~
    Uniform(top-``top_k`` allowed tokens of −gradient[i]) (the paper's Algorithm 1)."""
    scores = torch.full_like(gradient, math.inf)
    scores[:, allowed] = gradient[:, allowed]
    k = min(top_k, len(allowed))
    top = torch.topk(-scores, k, dim=1).indices  # [L, k]: most negative gradient first
    positions = torch.randint(len(suffix), (count,), generator=generator)
    picks = torch.randint(k, (count,), generator=generator)
    out = suffix.repeat(count, 1)
    out[torch.arange(count), positions] = top[positions, picks]
    return out


def _initial_suffix(tokenizer, init, suffix_length: int, allowed: list[int]) -> list[int]:
    if init is None:
        for text in (" !", "!"):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                return ids * suffix_length
        return allowed[:1] * suffix_length
    if isinstance(init, str):
        ids = list(tokenizer(init, add_special_tokens=False)["input_ids"])
        if len(ids) != suffix_length:
            raise UnlearnkitError(f"init {init!r} encodes to {len(ids)} tokens but suffix_length={suffix_length}: "
                                  f"pass suffix_length={len(ids)} or init as a list of {suffix_length} token ids")
        return ids
    ids = [int(t) for t in init]
    if len(ids) != suffix_length:
        raise UnlearnkitError(f"init has {len(ids)} token ids but suffix_length={suffix_length}: make them agree")
    return ids


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UnlearnkitError(f"{name}={value!r} is invalid: it must be a whole number >= 1")


@dataclass
class SuffixResult:
    """An optimised universal suffix.

    ``losses[0]`` is L at the initial suffix and ``losses[t]`` after step t (non-increasing); ``accepted[t-1]``
    says whether step t replaced the suffix. ``nll_before`` is the mean answer NLL without any suffix (the plain
    prompt, ``formatter.encode``), ``nll_after`` with the kept suffix (= ``losses[-1]``); the ``*_per_example``
    lists follow the examples' order.
    """

    suffix_ids: list[int]
    suffix_text: str
    losses: list[float]
    accepted: list[bool]
    nll_before: float
    nll_after: float
    nll_before_per_example: list[float] = field(default_factory=list)
    nll_after_per_example: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    def formatter(self, formatter: QAFormatter) -> SuffixFormatter:
        """``formatter`` with this suffix after every question."""
        return SuffixFormatter(formatter, self.suffix_ids)

    def to_dict(self) -> dict:
        return {"suffix_ids": self.suffix_ids, "suffix_text": self.suffix_text, "losses": self.losses,
                "accepted": self.accepted, "nll_before": self.nll_before, "nll_after": self.nll_after,
                "nll_before_per_example": self.nll_before_per_example,
                "nll_after_per_example": self.nll_after_per_example, "settings": self.settings,
                "seconds": self.seconds}


def _unsuffixed_nll(model: nn.Module, formatter: QAFormatter, examples: Sequence[QAExample],
                    batch_size: int) -> list[float]:
    encoded = [formatter.encode(ex.question, ex.answer) for ex in examples]
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                rows = [(e.input_ids, e.prompt_length) for e in encoded[start: start + batch_size]]
                out += _rows_nll(model, rows, formatter.pad_token_id).cpu().tolist()
    finally:
        model.train(was_training)
    return out


def optimize_suffix(model: nn.Module, formatter: QAFormatter, examples: Sequence[QAExample], suffix_length: int = 10,
                    steps: int = 50, top_k: int = 64, candidates: int = 64, batch_size: int = 16, seed: int = 0,
                    init: str | Sequence[int] | None = None, allowed_tokens: Sequence[int] | None = None,
                    progress: bool = False) -> SuffixResult:
    """Optimise one universal suffix of ``suffix_length`` tokens for ``steps`` GCG steps to minimise L (the mean
    answer NLL of ``examples``; module docstring). The model's weights are not changed.

    ``init``: ``None`` repeats the token ``" !"`` (or ``"!"``); a string must encode to ``suffix_length`` tokens;
    or a list of ids. ``allowed_tokens`` (default: every non-special token) are the substitutes a step may choose.
    ``batch_size`` is the number of (candidate, example) sequences per forward pass, and of examples per gradient
    pass. Cost per step: one forward-backward over the examples plus ``candidates`` × E sequences forward.
    """
    _check_positive(suffix_length=suffix_length, top_k=top_k, candidates=candidates, batch_size=batch_size)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UnlearnkitError(f"steps={steps!r} is invalid: it must be a whole number >= 0")
    started = time.perf_counter()
    tokenizer = formatter.tokenizer
    vocab_rows = model.get_input_embeddings().weight.shape[0]
    allowed = sorted(set(int(t) for t in allowed_tokens)) if allowed_tokens is not None else \
        default_allowed_tokens(tokenizer, vocab_rows)
    if not allowed:
        raise UnlearnkitError("no allowed tokens: pass a non-empty allowed_tokens")
    if allowed[0] < 0 or allowed[-1] >= vocab_rows:
        raise UnlearnkitError(f"allowed_tokens must lie in [0, {vocab_rows}): pass ids of the model's vocabulary")
    suffix = torch.tensor(_initial_suffix(tokenizer, init, suffix_length, allowed), dtype=torch.long)
    _check_suffix(suffix, vocab_rows)
    prepared = _prepare(formatter, examples, suffix_length)
    allowed_t = torch.tensor(allowed, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    pad = formatter.pad_token_id

    before = _unsuffixed_nll(model, formatter, examples, batch_size)
    per_example = _candidate_losses(model, prepared, suffix[None], pad, batch_size)[0]
    current_loss = float(per_example.mean())
    losses, accepted = [current_loss], []
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="suffix attack", leave=False)
    for _ in iterator:
        gradient, _ = _suffix_gradient(model, prepared, suffix, pad, batch_size)
        batch = sample_candidates(suffix, gradient.cpu(), allowed_t, top_k, candidates, generator)
        scores = _candidate_losses(model, prepared, batch, pad, batch_size)
        means = scores.mean(dim=1)
        best = int(torch.argmin(means))
        if float(means[best]) < current_loss:
            suffix, per_example, current_loss = batch[best].clone(), scores[best], float(means[best])
            accepted.append(True)
        else:
            accepted.append(False)
        losses.append(current_loss)
    settings = {"suffix_length": suffix_length, "steps": steps, "top_k": top_k, "candidates": candidates,
                "batch_size": batch_size, "seed": seed, "examples": len(examples), "allowed_tokens": len(allowed),
                "init": init if init is None or isinstance(init, str) else [int(t) for t in init]}
    return SuffixResult(
        suffix_ids=suffix.tolist(), suffix_text=tokenizer.decode(suffix.tolist()), losses=losses, accepted=accepted,
        nll_before=sum(before) / len(before), nll_after=current_loss, nll_before_per_example=before,
        nll_after_per_example=per_example.tolist(), settings=settings, seconds=time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation under the attack


def evaluate_with_suffix(model: nn.Module, evaluator: Evaluator, suffix_ids: Sequence[int],
                         metrics: Sequence[str] = SUFFIX_METRICS, reference: dict | None = None,
                         progress: bool = False) -> EvalResult:
    """``evaluator``'s evaluation of its task with ``suffix_ids`` after every question (the evaluator over a
    :class:`SuffixFormatter` of its formatter): every scored pair and every generated answer sees the suffixed
    prompt. ``model`` may differ from the model the suffix was optimised on (transfer). Nothing is kept in the
    result store and no intervals are drawn (:func:`~unlearnkit.attacks.evaluation.evaluate_attacked`)."""
    check_evaluator(evaluator, "evaluate_with_suffix", qa=True)
    wanted = registry.resolve(evaluator.suite, metrics)
    suffixed = retarget(evaluator, formatter=SuffixFormatter(evaluator.formatter, suffix_ids))
    return evaluate_attacked(suffixed, model, reference, metrics=wanted, progress=progress)


def paraphrased_examples(examples: Sequence[QAExample]) -> list[QAExample]:
    """The examples that have a ``paraphrased_question``, each with it in place of ``question`` (order kept)."""
    return [replace(ex, question=ex.paraphrased_question) for ex in examples if ex.paraphrased_question]


def evaluate_paraphrased(model: nn.Module, evaluator: Evaluator, metrics: Sequence[str] = PARAPHRASE_METRICS,
                         suffix_ids: Sequence[int] | None = None, progress: bool = False) -> EvalResult:
    """The forget metrics of the evaluator's ``task.eval_forget`` with each example's paraphrased question in place
    of its question (TOFU's ``paraphrased_question``); examples without one are left out (``paraphrased_examples``),
    so the per-example lists follow that subset. ``suffix_ids`` adds a suffix as well (both attacks at once).
    Nothing is kept in the result store and no intervals are drawn."""
    check_evaluator(evaluator, "evaluate_paraphrased", qa=True)
    wanted = registry.resolve(evaluator.suite, metrics)
    others = sorted(name for name in wanted if not name.startswith("forget_") and name not in FORGET_SPLIT_EXTRAS)
    if others:
        raise UnlearnkitError(f"evaluate_paraphrased computes forget-split metrics only, not {others}: pass forget_* "
                              f"names (or {', '.join(FORGET_SPLIT_EXTRAS)})")
    task, formatter = evaluator.task, evaluator.formatter
    examples = paraphrased_examples(task.eval_forget)
    if not examples:
        raise UnlearnkitError(f"no eval_forget example of task {task.name!r} has a paraphrased_question: use a "
                              "source that provides them (TOFU's forgetXX_perturbed, synthetic, or that column)")
    paraphrased = Task(name=f"{task.name}-paraphrased", forget=task.forget, retain=task.retain,
                       eval_forget=examples)
    chosen = formatter if suffix_ids is None else SuffixFormatter(formatter, suffix_ids)
    return evaluate_attacked(retarget(evaluator, formatter=chosen, task=paraphrased), model, metrics=wanted,
                             progress=progress)
