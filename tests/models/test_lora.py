"""LoRA through peft (models/lora.py): the wrapped model starts as the target, only adapters train, the frozen
reference is the same model with its adapters off, RMU trains its layers' adapters, and a run saves the adapter and
the merged model."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods"))
import naive_reference as naive  # noqa: E402

import unlearnkit  # noqa: E402
from unlearnkit.config import LoraSettings  # noqa: E402
from unlearnkit.errors import UnlearnkitError  # noqa: E402
from unlearnkit.methods import get_method  # noqa: E402
from unlearnkit.models.load import load_causal_lm  # noqa: E402
from unlearnkit.models.lora import add_lora, load_adapter, reference_view  # noqa: E402

pytest.importorskip("peft")
IDS = torch.tensor([[1, 11, 12, 13, 20, 21], [1, 14, 15, 23, 24, 2]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def randomise_adapters(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


def test_the_wrapped_model_starts_as_the_target_and_only_adapters_train():
    target = naive.perturbed_copy(naive.tiny_llama(), scale=0.2)
    before = logits(target)
    wrapped = add_lora(target, LoraSettings(r=4, target_modules=["q_proj", "v_proj"]), seed=1)
    assert torch.allclose(logits(wrapped), before, atol=1e-6)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}


def test_a_layer_name_the_model_lacks_is_a_one_line_error():
    with pytest.raises(UnlearnkitError, match="no linear layer named qkv_proj: choose from .*down_proj.*q_proj"):
        add_lora(naive.tiny_llama(), LoraSettings(target_modules=["qkv_proj", "q_proj"]))


def test_the_reference_is_the_same_model_with_its_adapters_off():
    target = naive.perturbed_copy(naive.tiny_llama(), scale=0.2)
    before = logits(target)
    wrapped = add_lora(target, LoraSettings(r=4))
    randomise_adapters(wrapped)
    reference = reference_view(wrapped)
    assert not any(True for _ in reference.parameters())  # no second copy of the weights
    assert torch.allclose(logits(reference), before, atol=1e-6)
    assert not torch.allclose(logits(wrapped), before, atol=1e-3)


def test_rmu_trains_the_adapters_of_its_down_proj_layers_against_the_adapters_off_reference():
    target = naive.perturbed_copy(naive.tiny_llama(), scale=0.2)
    base = {k: v.clone() for k, v in target.state_dict().items()}
    wrapped = add_lora(target, LoraSettings(r=4, target_modules=["down_proj", "q_proj"]))
    method = get_method("rmu", layer=2, update_layers=[1, 2])
    chosen = method.trainable_parameters(wrapped)
    names = {id(p): n for n, p in wrapped.named_parameters()}
    assert sorted(names[id(p)].split(".layers.")[1][:1] for p in chosen) == ["1", "1", "2", "2"]
    assert all("down_proj.lora_" in names[id(p)] for p in chosen)
    method.prepare(wrapped, [naive.forget_batch()], reference_model=reference_view(wrapped))
    optimizer = torch.optim.SGD(chosen, lr=0.5)
    for _ in range(3):
        loss, _ = method.loss(wrapped, naive.forget_batch(), naive.retain_batch())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in wrapped.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base[k], after[k]) for k in base)  # the base weights never move
    moved = [n for n, p in wrapped.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert moved and all("down_proj" in n and (".1." in n or ".2." in n) for n in moved)


SMALL = {
    "task": {"source": "synthetic", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2}},
    "model": {"base": "tiny", "max_length": 96, "lora": {"r": 4, "alpha": 8}},
    "prepare": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "npo", "params": {"retain_loss": "kl"}},
    "train": {"epochs": 1, "batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 0, "schedule": "constant"},
    "eval": {"batch_size": 32, "max_new_tokens": 8, "intervals": False},
}


def test_a_lora_run_saves_the_adapter_and_the_merged_model(tmp_path):
    result = unlearnkit.unlearn({**SMALL, "output_dir": str(tmp_path / "run")}, progress=False)
    run_dir = result.run_dir
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4
    merged, _ = load_causal_lm(run_dir / "model")
    target_folder = Path(json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
                         ["base_model_name_or_path"])
    target, _ = load_causal_lm(target_folder)
    ids = torch.tensor([[1, 5, 9, 14, 30, 7]])
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
        target_logits = target(input_ids=ids).logits
        adapted_logits = load_adapter(target, run_dir / "adapter")(input_ids=ids).logits
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, target_logits, atol=1e-3)
    aggregates = result.results["models"]
    assert aggregates["unlearned"]["aggregates"]["forget_Q_A_Prob"] < aggregates["target"]["aggregates"]["forget_Q_A_Prob"]
