"""Robustness attacks on an unlearned model: relearning (fine-tune on a few forget examples) and quantization
(reload at int8 / 4-bit); each re-runs the TOFU metrics (research/metrics.md §6)."""

from unlearnkit.attacks.quantize import SCHEMES, QuantizedEvaluation, quantization_error_bound, quantize_attack, quantize_model
from unlearnkit.attacks.relearn import (FORGET_METRICS, RelearnResult, Recovery, pick_examples, recovered_fraction,
                                        relearn, relearn_report)

__all__ = ["FORGET_METRICS", "SCHEMES", "QuantizedEvaluation", "RelearnResult", "Recovery", "pick_examples",
           "quantization_error_bound", "quantize_attack", "quantize_model", "recovered_fraction", "relearn",
           "relearn_report"]
