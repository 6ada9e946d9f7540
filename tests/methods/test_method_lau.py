"""LAU (AdvNPO, AdvGA; Yuan et al. 2024, research/methods.md §10): the latent attack's constraints and purpose, and
the outer losses against a one-example-at-a-time recomputation on the perturbed model."""

import pytest
import torch

import naive_reference as naive
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import get_method
from unlearnkit.methods.lau import added_to_layer_input, latent_attack
from unlearnkit.methods.losses import forward_logits, mean_nll
from unlearnkit.methods.rmu import decoder_layers


def clean_latents(model, layer, batch):
    captured = []
    with torch.no_grad(), added_to_layer_input(layer, None, captured):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return captured[0]


def test_the_attack_stays_in_the_ball_and_the_clean_range_and_brings_the_answers_back():
    model = naive.perturbed_copy(naive.tiny_llama(), scale=0.2)
    layer = decoder_layers(model)[1]
    batch = naive.forget_batch()
    torch.manual_seed(0)
    delta = latent_attack(model, layer, batch, epsilon=3.0, steps=6)
    assert not delta.requires_grad and all(p.grad is None for p in model.parameters())
    assert (delta.reshape(3, -1).norm(dim=1) <= 3.0 + 1e-5).all()
    latents = clean_latents(model, layer, batch)
    assert (latents + delta).min() >= latents.min() - 1e-6 and (latents + delta).max() <= latents.max() + 1e-6
    with torch.no_grad():
        clean = mean_nll(forward_logits(model, batch), batch["labels"])
        with added_to_layer_input(layer, delta):
            attacked = mean_nll(forward_logits(model, batch), batch["labels"])
    assert attacked < clean - 0.05  # the perturbation re-elicits the forget answers


def perturbed_logprob(model, layer, delta_row, ids, labels):
    """log π(y|x) of one unpadded example with its own slice of δ added to ``layer``'s input."""
    with added_to_layer_input(layer, delta_row[: len(ids)].unsqueeze(0)):
        return naive.sequence_logprob(model, ids, labels)


def attacked(method, model, batch, seed):
    """The δ the method's own attack draws with this seed (the loss below draws the same one)."""
    torch.manual_seed(seed)
    return latent_attack(model, decoder_layers(model)[method.perturb_layer], batch, method.epsilon, method.steps)


def test_adv_npo_is_npo_on_the_perturbed_forward_against_the_clean_reference():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = get_method("adv_npo", epsilon=2.0, steps=3, perturb_layer=2, beta=0.5, retain_weight=2.0)
    batch = naive.forget_batch()
    method.prepare(reference, [batch])
    delta = attacked(method, model, batch, seed=3)
    torch.manual_seed(3)
    loss, logs = method.loss(model, batch, naive.retain_batch())
    layer = decoder_layers(model)[2]
    terms = []
    for row, (ids, labels) in enumerate(naive.forget_examples()):
        log_ratio = (perturbed_logprob(model, layer, delta[row], ids, labels)
                     - naive.sequence_logprob(reference, ids, labels))
        terms.append(-(2 / 0.5) * naive.log_sigmoid(-0.5 * log_ratio))
    want = sum(terms) / len(terms) + 2.0 * naive.mean_nll(model, naive.retain_examples())
    assert loss.item() == pytest.approx(want, abs=1e-4)
    assert logs["delta_norm"] > 0


def test_adv_npo_with_epsilon_zero_is_npo():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    batch = naive.forget_batch()
    adv = get_method("adv_npo", epsilon=0.0, perturb_layer=1)
    npo = get_method("npo")
    adv.prepare(reference, [batch])
    npo.prepare(reference, [batch])
    a, _ = adv.loss(model, batch, naive.retain_batch())
    b, _ = npo.loss(model, batch, naive.retain_batch())
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_adv_ga_is_minus_the_mean_nll_of_the_perturbed_forward():
    model = naive.perturbed_copy(naive.tiny_llama(), scale=0.2)
    method = get_method("adv_ga", epsilon=2.0, steps=2, perturb_layer=0)
    assert not method.uses_retain
    batch = naive.forget_batch()
    delta = attacked(method, model, batch, seed=5)
    torch.manual_seed(5)
    loss, _ = method.loss(model, batch, None)
    layer = decoder_layers(model)[0]
    tokens = []
    for row, (ids, labels) in enumerate(naive.forget_examples()):
        with added_to_layer_input(layer, delta[row][: len(ids)].unsqueeze(0)):
            tokens += naive.answer_token_logprobs(model, ids, labels)
    assert loss.item() == pytest.approx(sum(tokens) / len(tokens), abs=1e-5)


def test_a_layer_outside_the_model_is_a_user_error():
    method = get_method("adv_ga", perturb_layer=9)
    with pytest.raises(UnlearnkitError, match="perturb_layer 9 out of range.*0 .. 3"):
        method.loss(naive.tiny_llama(), naive.forget_batch(), None)
