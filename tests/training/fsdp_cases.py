"""The runs compared between FSDP on 2 processes × accumulation 1 and one process × accumulation 2."""

from __future__ import annotations

from training_fixtures import PAD, make_examples, tiny_llama

from unlearnkit.methods.npo import NPO
from unlearnkit.methods.rmu import RMU

# npo: NPO with the KL retain term (reference log-probs precomputed in prepare, and a frozen reference model);
#      5 forget examples, so the last step has one example and the second process runs a zero-weight pass.
# rmu: RMU steering layer 1 (hooks on a decoder layer, only the down_proj of layers 0-1 train, a frozen reference);
#      7 forget examples: the last step splits 2 + 1.
CASES = {"npo": 5, "rmu": 7}


def method(case: str):
    if case == "npo":
        return NPO(beta=0.5, retain_loss="kl")
    return RMU(layer=1, steering_coeff=4.0)


def run_case(case: str, output_dir, accumulation: int, on_step=None, resume: bool = False):
    """Train a fresh tiny Llama (seed 3) with ``case``'s method for 2 epochs; return the model and the TrainResult."""
    from unlearnkit.training import TrainConfig, train

    model = tiny_llama(seed=3)
    config = TrainConfig(epochs=2, batch_size=2, gradient_accumulation_steps=accumulation, learning_rate=1e-2,
                         warmup_steps=1, max_grad_norm=1.0, seed=5)
    result = train(model, method(case), make_examples(CASES[case], seed=1), make_examples(5, seed=2), None, PAD,
                   config, output_dir, progress=False, reference_model_factory=lambda: tiny_llama(seed=3),
                   on_step=on_step, resume=resume)
    return model, result
