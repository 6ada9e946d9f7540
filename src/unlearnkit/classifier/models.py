"""The classifier track's models: an MLP, a small CNN and a small ResNet, in plain torch.nn (no torchvision).

Every model is ``head(features(x))``; ``model(x, penultimate=True)`` returns the penultimate features (for CKA and
k-NN against retrained models), so one ``functional_call`` reaches both. The CNN and the ResNet take (C, L) signals
(Conv1d) or (C, H, W) images (Conv2d), chosen from the task's input shape. They are built to train as a batched
ensemble under ``torch.func.vmap``:

- **No BatchNorm**: its running statistics are buffers updated in place, which ``vmap`` over stacked members cannot
  do; the ResNet uses GroupNorm (8 groups), whose output depends on the example only. No dropout either, so a
  member's forward pass is a function of its weights and its batch alone.
- Global average pooling is a ``mean`` over the spatial axes (no adaptive pooling module).

Sizes are small on purpose (digits: MLP 64→128→128→10, 25k weights); ``width`` and ``depth`` scale them.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.classifier.options import Options, check
from unlearnkit.errors import UnlearnkitError


class ModelOptions(Options):
    """Which model: ``mlp`` (``depth`` hidden layers of ``width``), ``cnn`` (three convolutions, ``width`` to
    2·``width`` channels) or ``resnet`` (a stem and three stages of ``depth`` basic blocks, ``width``, 2·, 4·)."""

    kind: Literal["mlp", "cnn", "resnet"] = "mlp"
    width: int | None = Field(None, ge=1, description="hidden units (mlp, default 128) or channels (default 16)")
    depth: int = Field(2, ge=1, le=8, description="hidden layers (mlp) or basic blocks per stage (resnet)")

    @model_validator(mode="after")
    def _groupnorm_divides(self) -> ModelOptions:
        if self.kind == "resnet" and self.width is not None and self.width % 8:
            raise ValueError(f"resnet width must be a multiple of 8 (GroupNorm has 8 groups), got {self.width}")
        return self

    @property
    def channels(self) -> int:
        return self.width or (128 if self.kind == "mlp" else 16)


def build_model(options: ModelOptions | dict, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A freshly initialised model (torch's default initialisation, drawn from the global generator)."""
    if not isinstance(options, ModelOptions):
        options = check(ModelOptions, dict(options), "classifier model")
    if options.kind == "mlp":
        return MLP(input_shape, num_classes, options.channels, options.depth)
    if len(input_shape) not in (2, 3):
        raise UnlearnkitError(f"classifier model {options.kind!r} needs examples shaped (channels, length) or "
                              f"(channels, height, width), got {input_shape}; use the 'mlp' model or reshape x")
    if options.kind == "cnn":
        return SmallCNN(input_shape, num_classes, options.channels)
    return SmallResNet(input_shape, num_classes, options.channels, options.depth)


class Classifier(nn.Module):
    """``head(features(x))``; ``forward(x, penultimate=True)`` gives the features."""

    features: nn.Module
    head: nn.Linear

    def forward(self, x: torch.Tensor, penultimate: bool = False) -> torch.Tensor:
        z = self.features(x)
        return z if penultimate else self.head(z)


class MLP(Classifier):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        size = 1
        for d in input_shape:
            size *= d
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(size if i == 0 else width, width), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)


def _conv(dims: int):
    return nn.Conv1d if dims == 1 else nn.Conv2d


class GlobalMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)


class SmallCNN(Classifier):
    """conv3(w) → ReLU → conv3(2w) → ReLU → max-pool 2 → conv3(2w) → ReLU → global mean → linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int):
        super().__init__()
        conv, dims = _conv(len(input_shape) - 1), len(input_shape) - 1
        pool = nn.MaxPool1d(2) if dims == 1 else nn.MaxPool2d(2)
        self.features = nn.Sequential(
            conv(input_shape[0], width, 3, padding=1), nn.ReLU(),
            conv(width, 2 * width, 3, padding=1), nn.ReLU(), pool,
            conv(2 * width, 2 * width, 3, padding=1), nn.ReLU(), GlobalMean())
        self.head = nn.Linear(2 * width, num_classes)


class BasicBlock(nn.Module):
    """He et al. 2016's basic block, GroupNorm in place of BatchNorm; a 1×1 projection when the shape changes."""

    def __init__(self, dims: int, c_in: int, c_out: int, stride: int):
        super().__init__()
        conv = _conv(dims)
        self.body = nn.Sequential(
            conv(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU(),
            conv(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(8, c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(8, c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SmallResNet(Classifier):
    """stem conv3(w) → GroupNorm → ReLU → stages (w, 2w, 4w; stride 1, 2, 2) of ``depth`` blocks → mean → linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        dims = len(input_shape) - 1
        layers: list[nn.Module] = [_conv(dims)(input_shape[0], width, 3, padding=1, bias=False),
                                   nn.GroupNorm(8, width), nn.ReLU()]
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for block in range(depth):
                layers.append(BasicBlock(dims, c_in, c_out, 2 if stage and block == 0 else 1))
                c_in = c_out
        layers.append(GlobalMean())
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)
