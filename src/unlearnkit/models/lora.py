"""LoRA through peft: unlearn with low-rank adapters instead of every weight (``model.lora: {r, alpha, …}``).

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021, arXiv:2106.09685, through Hugging Face
``peft`` (``LoraConfig`` + ``get_peft_model``). With ``model.lora`` set, the target model is wrapped before
unlearning: each chosen linear layer W gets W + (alpha / r)·B·A with A (r × in) and B (out × r), B starting at zero,
so the wrapped model starts equal to the target; only A and B train. What changes for the methods:

- NPO, SimNPO, IdkDPO … precompute their reference log-probabilities in ``prepare`` on the model as given, which
  is the target itself (B = 0): no second copy.
- Methods that need a frozen reference model (KL retain terms, RMU) get :func:`reference_view`: the *same* model
  run with the adapters switched off (peft's ``disable_adapter``), i.e. the target, without a second copy in memory.
- RMU trains the adapters of the layers whose ``mlp.down_proj`` it would train (methods/rmu.py).

The run saves the adapter (``adapter/``: ``adapter_model.safetensors`` + ``adapter_config.json``) and the merged
model (``model/``, W + (alpha / r)·B·A folded in: it loads with ``AutoModelForCausalLM`` like any other run's model),
and evaluates the merged model.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.config import LoraSettings
from unlearnkit.errors import ModelError


def linear_names(model: nn.Module) -> list[str]:
    """The distinct last name parts of ``model``'s linear layers (what ``target_modules`` may name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})


def all_linear_names(model: nn.Module) -> list[str]:
    """What peft's ``all-linear`` names: the last name parts of every linear layer but the output head."""
    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and module is not head})


def add_lora(model: nn.Module, settings: LoraSettings, seed: int = 0, layers: list[int] | None = None) -> nn.Module:
    """``model`` wrapped by peft with LoRA adapters (A drawn from a generator seeded by ``seed``); the base weights are
    frozen. A ``target_modules`` name the model does not have is a one-line error listing the ones it has.
    ``layers``: only the transformer blocks of these indices get adapters (peft's ``layers_to_transform``; Flexora's
    selection, models/flexora.py); None: every block."""
    from peft import LoraConfig, get_peft_model

    if settings.target_modules != "all-linear":
        present = set(linear_names(model))
        missing = [name for name in settings.target_modules if name not in present]
        if missing:
            raise ModelError(f"model.lora.target_modules: {type(model).__name__} has no linear layer named "
                                  f"{', '.join(missing)}: choose from {', '.join(linear_names(model))} (or all-linear)")
    targets = settings.target_modules
    if layers is not None and targets == "all-linear":  # peft takes layers_to_transform with a list of names only
        targets = all_linear_names(model)
    extra = {} if layers is None else {"layers_to_transform": sorted(layers)}
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM", **extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


class AdapterOff(nn.Module):
    """The wrapped model with its adapters switched off: the frozen reference, sharing every weight with it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._wrapped = [model]  # in a list: not registered as a submodule (no second parameter owner)
        self.config = model.config

    def get_base_model(self) -> nn.Module:
        return self._wrapped[0].get_base_model()

    def forward(self, *args, **kwargs):
        model = self._wrapped[0]
        with model.disable_adapter():
            return model(*args, **kwargs)


def reference_view(model: nn.Module) -> nn.Module:
    """The frozen reference for methods that need one: the same LoRA model with its adapters off."""
    return AdapterOff(model)


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters of one peft-wrapped linear layer (empty when it has none)."""
    return [p for name, p in module.named_parameters() if "lora_" in name]


def load_adapter(model: nn.Module, folder) -> nn.Module:
    """``model`` with the LoRA adapter saved in ``folder`` (``adapter_model.safetensors``) put back on it."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder))
