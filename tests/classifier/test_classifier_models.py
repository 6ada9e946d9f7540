"""The classifier models: shapes on signals and images, penultimate features, and the checks on their options."""

import pytest
import torch

from unlearnkit.classifier.models import ModelOptions, build_model
from unlearnkit.errors import UnlearnkitError


@pytest.mark.parametrize("kind, width", [("mlp", 16), ("cnn", 4), ("resnet", 8)])
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 12)])
def test_logits_are_the_head_of_the_penultimate_features(kind, width, shape):
    model = build_model({"kind": kind, "width": width, "depth": 1}, shape, 7)
    x = torch.randn(5, *shape)
    features = model(x, penultimate=True)
    assert features.ndim == 2 and features.shape[0] == 5
    assert torch.allclose(model(x), model.head(features))
    assert model(x).shape == (5, 7)
    # no batch statistics: an example's logits do not depend on the rest of its batch
    assert torch.allclose(model(x[:1]), model(x)[:1], atol=1e-6)


def test_resnet_downsamples_and_widens():
    model = build_model({"kind": "resnet", "width": 8, "depth": 2}, (3, 16, 16), 10)
    assert model(torch.randn(2, 3, 16, 16), penultimate=True).shape == (2, 32)  # 4 × width after three stages
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) == 1 + 2 * 6 + 2  # stem, blocks, shortcuts


@pytest.mark.parametrize("options, shape, words", [
    ({"kind": "resnet", "width": 12}, (1, 8, 8), "multiple of 8"),
    ({"kind": "cnn"}, (64,), "needs examples shaped"),
    ({"kind": "vit"}, (1, 8, 8), "kind must be"),
    ({"kind": "mlp", "depth": 0}, (64,), "depth must be greater than or equal to 1"),
])
def test_bad_model_options_are_one_line_errors(options, shape, words):
    with pytest.raises(UnlearnkitError, match=words):
        build_model(options, shape, 10)


def test_default_widths():
    assert ModelOptions().channels == 128 and ModelOptions(kind="cnn").channels == 16
