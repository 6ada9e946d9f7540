"""The small classifier setup the method tests share: 120 digits training examples, two 16-wide MLP members trained
3 epochs (seeds 2 and 9, cached in a folder of their own), and every sixth example (20) as the forget set."""

import dataclasses

import numpy as np
import pytest

from unlearnkit.classifier.data import load_task
from unlearnkit.classifier.ensemble import Recipe, train_ensemble
from unlearnkit.classifier.models import ModelOptions


@pytest.fixture(scope="session")
def digits120(tmp_path_factory):
    """(task, original ensemble, forget indices, cache folder)."""
    full = load_task("digits")
    task = dataclasses.replace(full, train=full.train.subset(np.arange(120)))
    cache = tmp_path_factory.mktemp("cache")
    original = train_ensemble(task, ModelOptions(width=16), Recipe(epochs=3, batch_size=32), [2, 9], cache_dir=cache)
    return task, original, np.arange(0, 120, 6), cache
