"""Robustness attacks on an unlearned model, each followed by the TOFU metrics again (research/metrics.md §6):
relearning (fine-tune on a few forget examples), quantization (reload at int8 / 4-bit), latent perturbation (the
strongest ‖δ‖ ≤ ε residual-stream shift toward the forget answers), an adversarial suffix (GCG) and paraphrased
questions. :mod:`unlearnkit.attacks.suite` runs them on a
finished run."""

from unlearnkit.attacks.latent import LatentProbeResult, latent_probe, residual_norm
from unlearnkit.attacks.quantize import SCHEMES, QuantizedEvaluation, quantization_error_bound, quantize_attack, quantize_model
from unlearnkit.attacks.suffix import (SuffixResult, evaluate_paraphrased, evaluate_with_suffix, optimize_suffix,
                                       suffix_loss)
from unlearnkit.attacks.suffix_prompt import SuffixFormatter
from unlearnkit.attacks.relearn import (FORGET_METRICS, RelearnResult, Recovery, pick_examples, recovered_fraction,
                                        relearn, relearn_report)

__all__ = ["FORGET_METRICS", "SCHEMES", "LatentProbeResult", "QuantizedEvaluation", "RelearnResult", "Recovery",
           "latent_probe", "pick_examples", "quantization_error_bound", "quantize_attack", "quantize_model",
           "recovered_fraction", "relearn", "relearn_report", "residual_norm", "SuffixFormatter", "SuffixResult",
           "evaluate_paraphrased", "evaluate_with_suffix", "optimize_suffix", "suffix_loss"]
