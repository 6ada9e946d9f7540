"""Runs with the closure optimizers shared by test_loop_closure_optimizers.py and ddp_closure_script.py."""

from __future__ import annotations

import torch
from training_fixtures import (
    PAD,
    NoisyGradDiff,
    make_examples,
    per_example_nll,
    tiny_llama,
)

# SAM on the forget term (needs loss_parts) and zeroth-order with 2 directions
TWO_PROCESS_OPTIMIZERS = {"sam": {"name": "sam", "rho": 0.05}, "zo": {"name": "zo", "directions": 2}}


class SplitNoisyGradDiff(NoisyGradDiff):
    """NoisyGradDiff that also gives its two terms apart (``loss_parts``, as RetainRegularised methods do), so that
    SAM can perturb the forget term alone: forget = −factor·NLL(forget), retain = factor·NLL(retain)."""

    name = "test-split-graddiff"

    def loss_parts(self, model, forget_batch, retain_batch, parts=("forget", "retain")):
        factor = 1.0 + 0.5 * torch.rand(())
        terms = {}
        if "forget" in parts:
            terms["forget"] = -factor * per_example_nll(model, forget_batch).mean()
        if "retain" in parts:
            terms["retain"] = factor * per_example_nll(model, retain_batch).mean()
        return terms, {}


def closure_run(output_dir, gradient_accumulation_steps: int, optimizer: dict, n_forget: int = 7):
    """Tiny Llama, 7 forget examples (steps of 4 and 3 examples: chunks 2+2 and 2+1), 5 retain examples, 2 epochs."""
    from unlearnkit.training import TrainConfig, train

    model = tiny_llama(seed=3)
    config = TrainConfig(epochs=2, batch_size=2, gradient_accumulation_steps=gradient_accumulation_steps,
                         learning_rate=1e-2, warmup_steps=1, seed=5, optimizer=optimizer)
    train(model, SplitNoisyGradDiff(), make_examples(n_forget, seed=1), make_examples(5, seed=2), None, PAD, config,
          output_dir, progress=False)
    return model
