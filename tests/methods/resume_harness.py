"""A method's run stopped mid-way and resumed, beside the same run uninterrupted: for the methods that keep state
across steps (GRU's running retain gradient, PDU's dual variable), which must travel in each checkpoint."""

from __future__ import annotations

from pathlib import Path

import naive_reference as naive
import pytest

from unlearnkit.methods import get_method
from unlearnkit.training import TrainConfig, train


def stopping_at(method, call: int):
    """``method``, made to stop as a killed run would (KeyboardInterrupt) at its ``call``-th loss call."""
    loss, calls = method.loss, [0]

    def stopping(model, forget_batch, retain_batch):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return loss(model, forget_batch, retain_batch)

    method.loss = stopping
    return method


def straight_and_resumed(name: str, params: dict, config: TrainConfig, stop_at_call: int, tmp_path: Path,
                         after_stop=None):
    """Train the memorised tiny model with method ``name`` twice on the naive examples: straight through (in
    ``tmp_path/"a"``), and stopped at loss call ``stop_at_call`` then resumed from its last checkpoint (in
    ``tmp_path/"b"``; ``after_stop(folder)`` looks at the checkpoints between the two). Returns the straight run's
    result and model, then the resumed run's."""
    forget, retain = naive.encoded(naive.forget_examples()), naive.encoded(naive.retain_examples())
    straight = naive.memorised()
    full = train(straight, get_method(name, **params), forget, retain, None, naive.PAD, config, tmp_path / "a",
                 progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(naive.memorised(), stopping_at(get_method(name, **params), stop_at_call), forget, retain, None,
              naive.PAD, config, tmp_path / "b", progress=False)
    if after_stop is not None:
        after_stop(tmp_path / "b")
    resumed = naive.memorised()
    result = train(resumed, get_method(name, **params), forget, retain, None, naive.PAD, config, tmp_path / "b",
                   resume=True, progress=False)
    return full, straight, result, resumed
