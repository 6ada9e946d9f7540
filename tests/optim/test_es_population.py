"""ES with the population evaluated in batches (optim/es_population.py) against the one-member-at-a-time ES of
optim/es.py (EGGROLL, Sarkar et al. 2025, arXiv:2511.16652: member n = pair ⌊n/2⌋ with sign ±, E = ±(σ/√r)·A·Bᵀ per
matrix, ±σ·z per vector; the forward x·(W + E)ᵀ = x·Wᵀ + (x·B)·(σ/√r·A)ᵀ).

The reference is written here: each member's perturbation added to a copy of the weights as a dense matrix
(A·Bᵀ formed explicitly, from the same seeded draws), and the loss evaluated on that copy. The batched path must
give the same losses to float tolerance — on a tiny Llama with a tied embedding/output matrix, RMSNorm scales, two
model calls per loss and a random factor — and the same ES step.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.optim.closure import LossClosure
from unlearnkit.optim.es import pair_noise
from unlearnkit.optim.es_population import population_losses
from unlearnkit.optim.registry import build_optimizer, check_serves

SIGMA, RANK, SEED = 0.05, 2, 11


def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return ids, mask


FORGET, RETAIN = batch(1), batch(2)


def loss_of(model) -> torch.Tensor:
    """−NLL(forget) + NLL(retain) · a random factor: two model calls and the global generator (reseeded)."""
    torch.manual_seed(5)
    total = 0.0
    for sign, (ids, mask) in ((-1.0, FORGET), (1.0, RETAIN)):
        logits = model(input_ids=ids, attention_mask=mask).logits
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        total = total + sign * (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()
    return total * (1 + 0.1 * torch.rand(()))


def dense_member_loss(model, n: int) -> float:
    """Member n's loss on a copy whose weights get E_n as a dense tensor."""
    copy_ = copy.deepcopy(model)
    params = [p for p in copy_.parameters()]
    sign = 1.0 if n % 2 == 0 else -1.0
    with torch.no_grad():
        for p, (a, b) in zip(params, pair_noise(params, SEED, n // 2, RANK)):
            if b is None:
                p.add_(sign * SIGMA * a)
            else:
                p.add_((sign * SIGMA / math.sqrt(RANK)) * (a @ b.T).reshape(p.shape))
        return float(loss_of(copy_))


@pytest.mark.parametrize("chunk", [3, 8])
def test_batched_losses_equal_dense_perturbed_copies(chunk):
    model = tiny_llama()
    params = list(model.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # one tied parameter, perturbed in both places
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        batched = population_losses(model, params, lambda: float(loss_of(model)), SEED, 8, RANK, SIGMA, chunk)
    expected = [dense_member_loss(model, n) for n in range(8)]
    assert batched == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert len(set(round(v, 6) for v in expected)) == 8  # the members differ: the perturbations matter
    assert all(torch.equal(p, q) for p, q in zip(params, before))  # the weights are never touched


def _es_step(population_batch: int):
    model = tiny_llama()
    optimizer = build_optimizer(model.parameters(), "es", {"population": 8, "rank": RANK, "sigma": SIGMA,
                                                           "population_batch": population_batch}, 0.5, 0.1)
    closure = LossClosure(lambda: {"forget": loss_of(model)}, model.parameters(), seed=SEED)
    closure.model = model
    loss = optimizer.step(closure)
    return model, loss, closure.calls


def test_es_step_with_batched_population_equals_the_sequential_step():
    sequential, loss_a, calls_a = _es_step(1)
    batched, loss_b, calls_b = _es_step(4)
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert calls_a == calls_b == 8  # the loss function is called once per member either way
    moved = 0.0
    for (name, p), q in zip(sequential.named_parameters(), batched.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, float((p.detach() - tiny_llama().state_dict()[name]).abs().max()))
    assert moved > 1e-3  # the step moved the weights


def test_a_method_that_hooks_layers_runs_a_submodule_or_asks_the_model_for_its_loss_is_refused():
    model = tiny_llama()
    params = list(model.parameters())

    def hooked():
        handle = model.model.layers[0].register_forward_hook(lambda *a: None)
        try:
            return float(loss_of(model))
        finally:
            handle.remove()

    with pytest.raises(ConfigError, match="population_batch: 1"), torch.no_grad():
        population_losses(model, params, hooked, SEED, 4, 1, SIGMA, 4)
    ids, mask = FORGET
    with pytest.raises(ConfigError, match="outside a call of the whole model"), torch.no_grad():
        population_losses(model, params, lambda: float(model.model(input_ids=ids).last_hidden_state.sum()), SEED,
                          4, 1, SIGMA, 2)
    with pytest.raises(ConfigError, match="its own loss"), torch.no_grad():
        population_losses(model, params, lambda: float(model(input_ids=ids, labels=ids).loss), SEED, 4, 1, SIGMA, 2)

    class Latent:
        name, alters_activations = "latent-test", True

    with pytest.raises(UnlearnkitError, match="population_batch"):
        check_serves("es", {"population_batch": 4}, Latent())
    check_serves("es", {"population_batch": 1}, Latent())
