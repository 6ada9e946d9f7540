"""The gradient-norm membership statistic, which runs the model (a backward pass per example).

Source: OpenUnlearning ``src/evals/metrics/mia/gradnorm.py`` (it cites arXiv:2402.17012 for its use on LLMs); see
:mod:`unlearnkit.evaluation.metrics.mia` for the other statistics, which read the scoring pass only.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch

from unlearnkit.data.formatting import IGNORE_INDEX, Encoded, QAFormatter
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.scoring.passes import encode_item

GRADNORM_P = 2  # OpenUnlearning's gradnorm p (1, 2 or inf are allowed there)
Reduction = Literal["mean", "global"]


def gradient_norms(
    model,
    formatter: QAFormatter,
    items: Sequence,
    p: float = GRADNORM_P,
    reduction: Reduction = "mean",
    drop_eos: bool = True,
) -> list[float]:
    """gradnorm statistic per example: the size of ∇θ ℓ̄(x), the gradient of the example's mean NLL, batch size 1.

    ``items``: (question, answer) pairs (the answer tokens are scored), raw text strings (every token after the
    first is scored) or :class:`~unlearnkit.data.formatting.Encoded` examples. ℓ̄ is the mean NLL of the scored
    tokens without the final EOS prediction when ``drop_eos`` (the reference's ``tokenwise_logprobs``).

    ``reduction="mean"`` (default) follows OpenUnlearning ``mia/gradnorm.py``: the mean over parameter tensors of
    each tensor's gradient p-norm, (1/|Θ|) Σ_θ ‖∂ℓ̄/∂θ‖_p, over every trainable tensor that receives a gradient.
    ``reduction="global"`` is the p-norm of the whole gradient vector, ‖∇θ ℓ̄‖_p (metrics.md §2's formula), which
    weighs large tensors more. ``p`` is 1, 2 or ``math.inf``. Lower = more member-like (members sit near a
    minimum of the training loss).

    Gradients come from ``torch.autograd.grad``: the model's ``.grad`` buffers are never touched (the reference
    zeroes them). The model runs in eval mode (no dropout) with gradients enabled; its train/eval mode is restored.
    """
    if p not in (1, 2, math.inf):
        raise UnlearnkitError(f"gradnorm p must be 1, 2 or inf, got {p}")
    if reduction not in ("mean", "global"):
        raise UnlearnkitError(f"gradnorm reduction must be 'mean' or 'global', got {reduction!r}")
    params = [param for param in model.parameters() if param.requires_grad]
    if not params:
        raise UnlearnkitError("the model has no trainable parameters: gradnorm needs requires_grad=True weights")
    device = next(model.parameters()).device
    norms: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for item in items:
                loss = _example_loss(model, formatter, encode_item(formatter, item), drop_eos, device)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                per_tensor = torch.stack([g.detach().float().norm(p=p) for g in grads if g is not None])
                total = per_tensor.mean() if reduction == "mean" else torch.linalg.vector_norm(per_tensor, ord=p)
                norms.append(float(total))
    finally:
        model.train(was_training)
    return norms


def _example_loss(model, formatter: QAFormatter, enc: Encoded, drop_eos: bool, device) -> torch.Tensor:
    """ℓ̄ of one un-padded example: mean NLL of its labelled tokens (last one dropped if it is the EOS)."""
    start, end = enc.prompt_length, len(enc.input_ids)
    if drop_eos and enc.input_ids[-1] == formatter.eos_token_id and enc.labels[-1] != IGNORE_INDEX:
        end -= 1
    if end <= start:
        raise UnlearnkitError("an example has no scored tokens before its EOS: drop empty answers")
    ids = torch.tensor([enc.input_ids], device=device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
    logp = torch.log_softmax(logits[start - 1 : end - 1].float(), dim=-1)
    targets = ids[0, start:end]
    return -logp.gather(-1, targets[:, None]).mean()
