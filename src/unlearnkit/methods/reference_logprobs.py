"""Reference sequence log-probabilities, computed once on the initial model instead of by a second model.

NPO and IdkDPO compare the trained model with the model before unlearning, pi_ref, only through the sequence
log-probability ``log pi_ref(y|x)`` of each forget example. The reference code keeps a frozen copy of the model
and runs it on every batch; since pi_ref never changes, the same numbers can be computed once before training
and looked up by the example's ``index`` in the forget list. That halves the forward passes and frees the memory
of the second model. The values are those the live reference would give, up to floating-point non-determinism
(the reference runs in eval mode; so does :func:`compute_reference_logprobs`).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from unlearnkit.methods.losses import forward_logits, sequence_nll


@torch.no_grad()
def compute_reference_logprobs(model: nn.Module, forget_batches: Iterable[dict], prefixes: tuple[str, ...] = ("",)) -> dict[str, torch.Tensor]:
    """``{prefix: table}``, where ``table[i] = log pi(y|x)`` (answer tokens summed) of forget example ``i``.

    ``prefix`` selects the sequences of the batch: ``""`` the true answer, ``"idk_"`` the assigned refusal. Each
    table is a float32 CPU tensor of length ``max(index) + 1``; examples absent from ``forget_batches`` are NaN.
    """
    was_training = model.training
    model.eval()
    indices: list[torch.Tensor] = []
    values: dict[str, list[torch.Tensor]] = {p: [] for p in prefixes}
    try:
        for batch in forget_batches:
            indices.append(batch["index"].detach().cpu().long())
            for prefix in prefixes:
                logits = forward_logits(model, batch, prefix)
                values[prefix].append(-sequence_nll(logits, batch[prefix + "labels"]).float().cpu())
    finally:
        model.train(was_training)
    if not indices:
        raise ValueError("no forget batches to compute the reference log-probabilities on")
    index = torch.cat(indices)
    tables = {}
    for prefix in prefixes:
        table = torch.full((int(index.max()) + 1,), float("nan"))
        table[index] = torch.cat(values[prefix])
        tables[prefix] = table
    return tables


def lookup_reference(table: torch.Tensor | None, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The reference log-probabilities of the examples ``index`` of a batch, on ``device``."""
    if table is None:
        raise RuntimeError("the reference log-probabilities are missing: call method.prepare(model, forget_batches) before training")
    index = index.detach().cpu().long()
    if int(index.max()) >= len(table) or torch.isnan(table[index]).any():
        raise RuntimeError("a forget example has no reference log-probability: prepare() must see every forget example")
    return table[index].to(device)
