"""The quantization attack on a tiny Llama with bitsandbytes on the CPU: every quantized weight is checked against
a naive re-computation of the scheme (codes and error bound), the forward pass against the dequantized weights,
and the attack against evaluate_tofu."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unlearnkit.attacks.quantize import (dequantized_weights, quantization_error_bound, quantize_attack,
                                         quantize_model)
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.suites.tofu import evaluate_tofu

from conftest import evaluator, llama

pytest.importorskip("bitsandbytes")

# FP4 (E2M1, bitsandbytes normalisation by 12): 0, 0.0625, 2, 3, 4, 6, 8, 12 over 12, with both signs
FP4_VALUES = sorted({s * v for v in (0.0, 0.0625 / 12, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1.0) for s in (1, -1)})
METRICS = {"forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "forget_Truth_Ratio"}


@pytest.fixture(scope="module")
def model(attack_setup):
    # input sizes 64 and 128: multiples of bitsandbytes' 4-bit block (see quantize.py)
    return llama(len(attack_setup["formatter"].tokenizer), hidden=64, intermediate=128, seed=1).eval()


def linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().float().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def test_int8_round_trip_within_bound_and_codes_match_a_naive_quantizer(model):
    quantized = quantize_model(model, "int8")
    original, dequantized = linear_weights(model), dequantized_weights(quantized)
    assert set(dequantized) == set(original) - {"lm_head"}  # lm_head (tied to the embeddings) stays unquantized
    for name, restored in dequantized.items():
        w = original[name]
        assert ((w - restored).abs() <= quantization_error_bound(w, "int8")).all(), name
        # naive LLM.int8 weight quantization: float16 cast, q = round(127 w / rowabsmax)
        w16 = w.half().float()
        naive = torch.round(127 * w16 / w16.abs().amax(dim=1, keepdim=True))
        codes = quantized.get_submodule(name).weight.CB.float()
        assert (codes - naive).abs().max() <= 1, name  # a tie may round either way
        assert (codes != naive).float().mean() < 1e-3, name
        # the bound is tight: half a step of the row scale, not much more
        assert (w - restored).abs().max() > 0.3 * (w.abs().amax(dim=1) / 254).min()


@pytest.mark.parametrize("scheme", ["fp4", "nf4"])
def test_4bit_round_trip_is_nearest_code_book_value_within_bound(model, scheme):
    import bitsandbytes.functional as bnb_functional

    quantized = quantize_model(model, scheme)
    original, dequantized = linear_weights(model), dequantized_weights(quantized)
    book = torch.tensor(FP4_VALUES if scheme == "fp4" else bnb_functional.get_4bit_type("nf4", device="cpu").tolist())
    for name, restored in dequantized.items():
        w = original[name]
        assert ((w - restored).abs() <= quantization_error_bound(w, scheme) * (1 + 1e-6)).all(), name
        flat = w.flatten()
        absmax = flat.view(-1, 64).abs().amax(dim=1).repeat_interleave(64)
        nearest = book[(flat.unsqueeze(1) / absmax.unsqueeze(1) - book).abs().argmin(dim=1)] * absmax
        assert torch.allclose(restored.flatten(), nearest, rtol=1e-5, atol=1e-8), name


@pytest.mark.parametrize("scheme", ["fp4", "nf4"])
def test_4bit_forward_uses_the_dequantized_weights(model, scheme):
    """The quantized forward is close to a full-precision model holding the dequantized weights: much closer than
    to the original model (equal up to bfloat16 compute on CPUs with AVX512-BF16, see quantize.py)."""
    quantized = quantize_model(model, scheme)
    before_forward = dequantized_weights(quantized)
    ids = torch.tensor([[1, 5, 9, 14, 30, 7, 44, 3], [1, 8, 8, 21, 2, 60, 11, 19]])
    with torch.no_grad():
        logits = quantized(ids).logits.float()
    manual = copy.deepcopy(model)
    for name, restored in before_forward.items():
        manual.get_submodule(name).weight.data.copy_(restored)
    with torch.no_grad():
        to_manual = (logits - manual(ids).logits).abs().max()
        to_full = (logits - model(ids).logits).abs().max()
    assert to_manual < 0.1 * to_full


def test_int8_logits_close_to_full_precision_and_closer_than_4bit(model):
    ids = torch.tensor([[1, 5, 9, 14, 30, 7, 44, 3], [1, 8, 8, 21, 2, 60, 11, 19]])
    with torch.no_grad():
        full = model(ids).logits
        int8 = quantize_model(model, "int8")(ids).logits.float()
        fp4 = quantize_model(model, "fp4")(ids).logits.float()
    scale = full.abs().max()
    assert (int8 - full).abs().max() < 0.03 * scale
    assert (int8 - full).abs().max() < (fp4 - full).abs().max()


def test_quantize_model_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantize_model(model, "nf4")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_quantize_attack_runs_evaluate_tofu_per_scheme(model, attack_setup):
    formatter, task = attack_setup["formatter"], attack_setup["task"]
    results = quantize_attack(model, evaluator(task, formatter, max_new_tokens=8), schemes=("int8", "fp4"),
                              metrics=METRICS)
    assert list(results) == ["full", "int8", "fp4"]
    direct = evaluate_tofu(model, formatter, task, metrics=METRICS, max_new_tokens=8, progress=False).aggregates
    assert results["full"].result.aggregates == pytest.approx(direct)
    for scheme in ("int8", "fp4"):
        aggregates = results[scheme].result.aggregates
        assert set(METRICS) <= set(aggregates) and all(aggregates[m] is not None for m in METRICS)
        assert results[scheme].to_dict()["scheme"] == scheme and results[scheme].description
    assert results["int8"].result.aggregates["forget_Q_A_Prob"] == pytest.approx(direct["forget_Q_A_Prob"], rel=0.05)


def test_user_errors(attack_setup):
    small = llama(len(attack_setup["formatter"].tokenizer), hidden=32, intermediate=64)
    with pytest.raises(UnlearnkitError, match="unknown quantization scheme"):
        quantize_model(small, "int3")
    with pytest.raises(UnlearnkitError, match="multiple of 64"):
        quantize_model(small, "fp4")
    with pytest.raises(UnlearnkitError, match="PreTrainedModel"):
        quantize_model(nn.Linear(64, 64), "int8")
    with pytest.raises(UnlearnkitError, match="2-D"):
        quantization_error_bound(torch.zeros(3), "int8")
    # metric names are checked before any quantization (fp4 on this model would fail with "multiple of 64")
    with pytest.raises(UnlearnkitError, match="unknown TOFU metric"):
        quantize_attack(small, evaluator(attack_setup["task"], attack_setup["formatter"]), schemes=("fp4",),
                        metrics=("forget_nonsense",), include_full_precision=False)
    with pytest.raises(UnlearnkitError, match="quantize_attack takes an Evaluator"):
        quantize_attack(small, attack_setup["formatter"], attack_setup["task"])


def _has_bf16_cpu_kernel() -> bool:
    try:
        return "avx512_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        return True  # unknown: do not require the dequantized path


def test_weight_only_schemes_run_as_dequantized_float_weights_with_the_same_numbers(model, attack_setup):
    """fp4 evaluated through the float copy equals fp4 through bitsandbytes' kernels; LLM.int8() (activations
    quantized too) stays on bitsandbytes."""
    formatter, task = attack_setup["formatter"], attack_setup["task"]
    chosen = evaluator(task, formatter, max_new_tokens=8)
    fast = quantize_attack(model, chosen, schemes=("int8", "fp4"), metrics=METRICS, include_full_precision=False)
    slow = quantize_attack(model, chosen, schemes=("fp4",), metrics=METRICS, include_full_precision=False,
                           kernel="bitsandbytes")
    assert fast["int8"].kernel == "bitsandbytes" and fast["int8"].logit_difference > 1e-4
    if not _has_bf16_cpu_kernel():
        assert fast["fp4"].kernel == "dequantized"
    assert slow["fp4"].kernel == "bitsandbytes" and slow["fp4"].logit_difference is None
    if fast["fp4"].kernel == "dequantized":
        assert fast["fp4"].logit_difference <= 1e-4
        assert fast["fp4"].result.aggregates == pytest.approx(slow["fp4"].result.aggregates, rel=1e-4, abs=1e-6)
    with pytest.raises(UnlearnkitError, match="kernel="):
        quantize_attack(model, chosen, schemes=("fp4",), kernel="fast")
