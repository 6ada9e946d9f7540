"""The quantization attack: reload a model with quantized weights and re-run the TOFU metrics.

Paper: "Catastrophic Failure of LLM Unlearning via Quantization", Zhang et al., ICLR 2025, arXiv:2410.16454; code
``zzwjames/FailureLLMUnlearning`` (``utils.py::load_model``). Their attack takes the unlearned model, reloads it
through Hugging Face ``from_pretrained`` with ``BitsAndBytesConfig(load_in_8bit=True)`` or
``BitsAndBytesConfig(load_in_4bit=True)`` and re-evaluates; no training is involved. The mechanism: unlearning with
a small learning rate moves most weights by less than one quantization bin, so the quantized unlearned model is
close to the quantized target model. Effectiveness must be reported together with utility, because a collapse of
utility can fake better forgetting (research/methods.md §21).

This module does exactly that reload with bitsandbytes (which runs on the CPU since 0.45), one scheme at a time:

==========  =====================================================================================================
scheme      what bitsandbytes does to every ``nn.Linear`` weight (``lm_head`` and the embeddings stay unquantized,
            transformers' default ``modules_to_not_convert``)
==========  =====================================================================================================
``int8``    LLM.int8() (Dettmers et al. 2022, arXiv:2208.07339): the weight is cast to float16, then each output
            row r is quantized symmetrically, ``q = round(127 · w / a_r)`` with ``a_r = max_j |w_rj|`` (int8),
            dequantized as ``q · a_r / 127``. At matmul time, activation columns with a value above 6.0 are kept
            in float16 (outlier decomposition, ``llm_int8_threshold=6.0``). ``load_in_8bit=True`` defaults.
``fp4``     bitsandbytes 4-bit float (the paper's 4-bit: ``load_in_4bit=True`` defaults): the flattened weight
            is cut into blocks of 64; each value is divided by its block's absmax ``a_b`` and mapped to the
            nearest of the 16 FP4 (E2M1) values {0, 0.0625, 2, 3, 4, 6, 8, 12}/12 with sign; no double quantization.
``nf4``     as ``fp4`` with the NormalFloat4 code book of QLoRA (Dettmers et al. 2023, arXiv:2305.14314).
==========  =====================================================================================================

A bitsandbytes limitation guarded against: on the CPU, bitsandbytes 0.50.2 dequantizes a 4-bit weight row by row
and reads the wrong block scale when the weight's input size is not a multiple of 64 (found by this module's
tests: the stored codes are right, the dequantized weights are not); :func:`quantize_model` refuses such a model
for ``fp4``/``nf4`` on the CPU. Hugging Face model sizes (hidden and MLP widths) are multiples of 64.

Compute precision: on the GPU, and on CPUs without AVX512-BF16, a 4-bit layer dequantizes its weight to the
compute dtype and multiplies; on CPUs with AVX512-BF16, bitsandbytes' fused CPU kernel casts the activations and the
block scales to bfloat16 (as the paper's bfloat16 loading does everywhere). LLM.int8() layers also quantize the
activations row-wise to int8 at matmul time, so int8 logits differ from a model with the dequantized weights.

**How the quantized model is run** (``kernel``): bitsandbytes' CPU kernels run at a fraction of float speed. A
weight-only scheme computes exactly what a float model holding the dequantized weights computes, so by default
(``kernel="auto"``) each quantized reload is checked: its dequantized weights (:func:`dequantized_weights`, read
from the stored codes and scales) are put into a float copy of the model, both run one batch of forget questions,
and when their logits agree to ``KERNEL_TOLERANCE`` the float copy is evaluated; otherwise (LLM.int8() quantizes the
activations too; bitsandbytes' fused bfloat16 CPU kernel rounds them) the bitsandbytes model is. Each result says
which one ran and the largest logit difference found. ``kernel="bitsandbytes"`` always runs bitsandbytes.

Where this differs from the paper's loader, on purpose: the unquantized modules and the 4-bit compute dtype keep
the model's own dtype (the paper loads in bfloat16), so that the only change against the full-precision
evaluation is the quantization of the linear weights.

Error bounds (:func:`quantization_error_bound`), per weight w of row r / block b, with u = 2⁻¹¹ the float16 unit
roundoff:

- ``int8``: ``|w − dequant(quant(w))| ≤ a_r(1+u)/254 + u·|w| + 2⁻²⁵``: half a quantization step of the float16
  row absmax, plus the float16 cast of w (relative u for normal numbers, at most 2⁻²⁵ absolute for subnormals).
- ``fp4`` / ``nf4``: ``|w − dequant(quant(w))| ≤ a_b · g/2`` with g the largest gap between two neighbouring
  code-book values (FP4: 1 − 8/12 = 1/3; NF4: 1 − 0.7229568 ≈ 0.277): rounding to the nearest code-book value
  is never further than half the widest gap. These are reconstructions from the scheme definitions; the
  bitsandbytes documentation states no bound.
"""

from __future__ import annotations

import copy
import gc
import tempfile
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from unlearnkit.attacks.evaluation import check_evaluator, evaluate_attacked
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.suites.result import EvalResult
from unlearnkit.methods.base import installed_transform, weights_only

FLOAT16_UNIT_ROUNDOFF = 2.0**-11
FLOAT16_SUBNORMAL_ERROR = 2.0**-25  # half the spacing of float16 subnormals (2⁻²⁴)
BLOCK_SIZE_4BIT = 64  # bitsandbytes' default blocksize for 4-bit weights

# The 4-bit code books, as values in [-1, 1] (bitsandbytes.functional.get_4bit_type; FP4 normalised by 12).
FP4_CODE_BOOK = tuple(sorted({s * v / 12 for v in (0.0, 0.0625, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0) for s in (1, -1)}))
NF4_CODE_BOOK = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                 -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                 0.7229568362236023, 1.0)


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme: its name, a one-line description for results, and its code book (4-bit only)."""

    name: str
    description: str
    code_book: tuple[float, ...] | None = None


SCHEMES = {
    "int8": Scheme("int8", "LLM.int8(): int8 weight-only, symmetric per output row (absmax), fp16 outlier "
                           "decomposition above 6.0 (bitsandbytes load_in_8bit)"),
    "fp4": Scheme("fp4", "4-bit float (E2M1) weights, block-wise absmax, blocks of 64, no double quantization "
                         "(bitsandbytes load_in_4bit default)", FP4_CODE_BOOK),
    "nf4": Scheme("nf4", "4-bit NormalFloat weights, block-wise absmax, blocks of 64, no double quantization "
                         "(bitsandbytes load_in_4bit, quant_type nf4)", NF4_CODE_BOOK),
}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise UnlearnkitError(f"unknown quantization scheme {name!r}: choose from {', '.join(SCHEMES)}")
    return SCHEMES[name]


def _bitsandbytes_config(scheme: Scheme, dtype: torch.dtype):
    try:
        import bitsandbytes  # noqa: F401  (transformers needs it; fail here with a clear message)
    except ImportError as error:
        raise UnlearnkitError("the quantization attack needs bitsandbytes: pip install bitsandbytes") from error
    from transformers import BitsAndBytesConfig

    if scheme.name == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=scheme.name, bnb_4bit_compute_dtype=dtype)


def quantize_model(model: nn.Module, scheme: str) -> nn.Module:
    """A quantized copy of ``model`` (left untouched), on the same device, in eval mode.

    The model is saved to a temporary folder and reloaded with ``from_pretrained(quantization_config=...)``,
    as in the paper's attack; see the module docstring for what each scheme does. A model carrying an inference-time
    transform (:func:`~unlearnkit.methods.base.installed_transform`, e.g. GUARD-IT's steering) has its weights
    quantized and a copy of the same transform installed on the quantized model.
    """
    chosen = get_scheme(scheme)
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise UnlearnkitError(f"cannot quantize a {type(model).__name__}: the quantization attack reloads a "
                              "Hugging Face model (PreTrainedModel); load the model with unlearnkit.models.load")
    parameter = next(model.parameters())
    device = parameter.device
    if chosen.code_book is not None and device.type == "cpu":
        odd = sorted({m.in_features for m in model.modules()
                      if isinstance(m, nn.Linear) and m.in_features % BLOCK_SIZE_4BIT})
        if odd:
            raise UnlearnkitError(f"cannot quantize to {scheme} on the CPU: linear layers with input size {odd} are not "
                                  f"a multiple of {BLOCK_SIZE_4BIT}, which bitsandbytes' CPU 4-bit kernel gets wrong; "
                                  "use a GPU or a model whose layer sizes are multiples of 64")
    transform = installed_transform(model)  # an inference-time method's (GUARD-IT): its buffers are not weights
    with tempfile.TemporaryDirectory(prefix="unlearnkit-quantize-") as folder:
        model.save_pretrained(folder, **({"state_dict": weights_only(model)} if transform is not None else {}))
        quantized = type(model).from_pretrained(
            folder, quantization_config=_bitsandbytes_config(chosen, parameter.dtype), dtype=parameter.dtype,
            device_map={"": str(device)}, use_safetensors=True,
        )
    if transform is not None:  # the weights quantized, the same transform installed on them
        copy.deepcopy(transform).install(quantized)
    return quantized.eval()


def quantization_error_bound(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    """The largest ``|w − dequant(quant(w))|`` the scheme allows for each element of the 2-D ``weight`` (same shape).

    Formulas (reconstructed from the scheme definitions, see the module docstring): ``int8``:
    ``a_r(1+u)/254 + u|w| + 2⁻²⁵`` with ``a_r`` the row absmax and ``u = 2⁻¹¹``; ``fp4``/``nf4``: ``a_b·g/2`` with
    ``a_b`` the absmax of the element's block of 64 in the flattened weight and ``g`` the code book's widest gap.
    """
    chosen = get_scheme(scheme)
    w = weight.detach().float()
    if w.dim() != 2:
        raise UnlearnkitError(f"quantization_error_bound takes a 2-D linear weight, got shape {tuple(w.shape)}")
    if chosen.code_book is None:
        row_absmax = w.abs().amax(dim=1, keepdim=True)
        return row_absmax * (1 + FLOAT16_UNIT_ROUNDOFF) / 254 + FLOAT16_UNIT_ROUNDOFF * w.abs() + FLOAT16_SUBNORMAL_ERROR
    flat = w.flatten()
    blocks = torch.nn.functional.pad(flat, (0, (-flat.numel()) % BLOCK_SIZE_4BIT)).view(-1, BLOCK_SIZE_4BIT)
    block_absmax = blocks.abs().amax(dim=1).repeat_interleave(BLOCK_SIZE_4BIT)[: flat.numel()]
    book = torch.tensor(chosen.code_book, dtype=torch.float64)
    widest_gap = float((book[1:] - book[:-1]).max())
    return (block_absmax * widest_gap / 2).view_as(w)


def dequantized_weights(quantized: nn.Module) -> dict[str, torch.Tensor]:
    """``module name → float32 weight`` as stored by the quantized model, for every bitsandbytes linear layer.

    Call it before the model runs: on CPUs with AVX512-BF16 the first eval forward repacks 4-bit codes into a kernel
    layout and casts the block scales to bfloat16, in place (bitsandbytes 0.50.2; its own un-packing is not
    reliable for every shape, so it is refused here rather than read wrong).
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnb_functional

    out: dict[str, torch.Tensor] = {}
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            codes, row_absmax = module.weight.CB, module.weight.SCB
            out[name] = (codes.float() * row_absmax.float().unsqueeze(1) / 127).cpu()
        elif isinstance(module, bnb.nn.Linear4bit):
            if getattr(module.weight.quant_state, "packing_format_for_cpu", False):
                raise UnlearnkitError(f"{name} was repacked for bitsandbytes' CPU kernel by a forward pass: call "
                                      "dequantized_weights on a freshly quantized model, before running it")
            out[name] = bnb_functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float().cpu()
    return out


KERNEL_TOLERANCE = 1e-4  # largest |logit difference| (relative to the largest |logit|) that counts as equal


def dequantized_copy(model: nn.Module, quantized: nn.Module) -> nn.Module:
    """A float copy of ``model`` whose quantized linear weights are replaced by ``quantized``'s dequantized ones
    (call before ``quantized`` runs: see :func:`dequantized_weights`)."""
    weights = dequantized_weights(quantized)
    copy_ = copy.deepcopy(model).eval()
    modules = dict(copy_.named_modules())
    with torch.no_grad():
        for name, weight in weights.items():
            target = modules[name].weight
            target.copy_(weight.to(target.dtype).view_as(target))
    return copy_


def logit_difference(a: nn.Module, b: nn.Module, batch: dict) -> float:
    """max |logits_a − logits_b| / max |logits_b| over the real tokens of ``batch``."""
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        la, lb = a(**inputs).logits.float(), b(**inputs).logits.float()
    real = batch["attention_mask"].bool()
    return float((la[real] - lb[real]).abs().max() / lb[real].abs().max().clamp(min=1e-12))


def probe_batch(evaluator: Evaluator, model: nn.Module, size: int = 4) -> dict:
    """A right-padded batch of the first ``size`` forget (question, answer) pairs, on ``model``'s device."""
    encoded = [evaluator.formatter.encode(ex.question, ex.answer) for ex in evaluator.task.eval_forget[:size]]
    width = max(len(e.input_ids) for e in encoded)
    pad = evaluator.formatter.pad_token_id
    ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in encoded])
    mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in encoded])
    device = next(model.parameters()).device
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@dataclass
class QuantizedEvaluation:
    """The TOFU evaluation of one precision: ``scheme`` (``full`` or a scheme name), its description, the result,
    and how it ran: ``kernel`` ("dequantized" or "bitsandbytes", see the module docstring) and the largest relative
    logit difference between the two on the probe batch (None when not compared)."""

    scheme: str
    description: str
    result: EvalResult
    kernel: str | None = None
    logit_difference: float | None = None

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "description": self.description, "kernel": self.kernel,
                "logit_difference": self.logit_difference, **self.result.to_dict()}


def quantize_attack(model: nn.Module, evaluator: Evaluator, schemes: Iterable[str] = ("int8", "fp4"),
                    metrics: Iterable[str] | None = None, reference: dict | None = None,
                    include_full_precision: bool = True, progress: bool = False,
                    kernel: str = "auto") -> dict[str, QuantizedEvaluation]:
    """Evaluate ``model`` with ``evaluator`` at full precision and after each quantization scheme.

    ``metrics`` defaults to the evaluator's (for a default :class:`Evaluator`, every TOFU metric but the opt-in
    ones), so forgetting and utility are reported together (pass a subset that keeps both, e.g. the forget metrics
    and ``model_utility``). ``reference`` is the retain model's :meth:`EvalResult.reference_stats` (for
    forget_quality and privleak). The evaluations keep nothing in the result store and draw no intervals
    (:func:`~unlearnkit.attacks.evaluation.evaluate_attacked`); the full-precision one (the model as given) reads
    and fills the store. Keys of the result: ``"full"`` (when ``include_full_precision``) and each scheme name. One
    quantized copy (and its dequantized float copy, ``kernel="auto"``) is held at a time.
    """
    if kernel not in ("auto", "bitsandbytes"):
        raise UnlearnkitError(f"kernel={kernel!r}: choose 'auto' (dequantized float weights where they equal "
                              "bitsandbytes) or 'bitsandbytes'")
    check_evaluator(evaluator, "quantize_attack", qa=True)
    wanted = evaluator.metrics if metrics is None else registry.resolve(evaluator.suite, metrics)  # fail before work
    chosen = [get_scheme(name) for name in schemes]
    if not chosen and not include_full_precision:
        raise UnlearnkitError("nothing to evaluate: give at least one quantization scheme or include_full_precision")

    def evaluate(candidate: nn.Module) -> EvalResult:
        return evaluate_attacked(evaluator, candidate, reference, metrics=wanted, progress=progress)

    out: dict[str, QuantizedEvaluation] = {}
    if include_full_precision:
        dtype = next(model.parameters()).dtype
        full = evaluator.evaluate(model, reference, metrics=wanted, intervals=False, store=True, progress=progress)
        out["full"] = QuantizedEvaluation("full", f"unquantized ({str(dtype).removeprefix('torch.')})", full)
    for scheme in chosen:
        quantized = quantize_model(model, scheme.name)
        runner, used, difference = quantized, "bitsandbytes", None
        if kernel == "auto":
            candidate = dequantized_copy(model, quantized)
            difference = logit_difference(candidate, quantized, probe_batch(evaluator, model))
            if difference <= KERNEL_TOLERANCE:
                runner, used = candidate, "dequantized"
                del quantized
            else:
                del candidate
        out[scheme.name] = QuantizedEvaluation(scheme.name, scheme.description, evaluate(runner), used, difference)
        del runner
        gc.collect()
    return out
