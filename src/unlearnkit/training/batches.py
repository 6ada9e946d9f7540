"""Turn planned positions into the batch dictionaries of the method contract (see :mod:`unlearnkit.methods.base`)."""

from __future__ import annotations

from typing import Sequence

import torch

from unlearnkit.data.formatting import Encoded, collate


def forget_batch(forget: Sequence[Encoded], positions: Sequence[int], pad_token_id: int,
                 idk: Sequence[Encoded] | None = None, device: torch.device | str = "cpu") -> dict:
    """``input_ids``/``attention_mask``/``labels`` of the forget rows and their ``index``; with ``idk``, also the
    ``idk_input_ids``/``idk_attention_mask``/``idk_labels`` of the same rows' refusal examples."""
    batch = collate([forget[i] for i in positions], pad_token_id)
    batch["index"] = torch.tensor(list(positions), dtype=torch.long)
    if idk is not None:
        refusal = collate([idk[i] for i in positions], pad_token_id)
        batch.update({f"idk_{key}": value for key, value in refusal.items()})
    return {key: value.to(device) for key, value in batch.items()}


def retain_batch(retain: Sequence[Encoded], positions: Sequence[int], pad_token_id: int,
                 device: torch.device | str = "cpu") -> dict:
    return {key: value.to(device) for key, value in collate([retain[i] for i in positions], pad_token_id).items()}


def all_forget_batches(forget: Sequence[Encoded], batch_size: int, pad_token_id: int,
                       idk: Sequence[Encoded] | None = None, device: torch.device | str = "cpu") -> list[dict]:
    """Every forget example once, in list order: what ``UnlearningMethod.prepare`` sees (the same in every process)."""
    return [
        forget_batch(forget, range(start, min(start + batch_size, len(forget))), pad_token_id, idk, device)
        for start in range(0, len(forget), batch_size)
    ]
