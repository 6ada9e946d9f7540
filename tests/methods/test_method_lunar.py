"""LUNAR: the unlearning vector and the regression loss against a one-example-at-a-time recomputation, and its
defining behaviour: trained, the forget prompts' block outputs move by coeff·r while the retain prompts' stay
(facebookresearch/LUNAR ``src/generate_directions.py``, ``src/hook_for_unlearn.py``, ``src/dataset_utils.py``)."""

import pytest
import torch

import naive_reference as naive
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import get_method
from unlearnkit.methods.lunar import prompt_mask
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.tiny import build_tiny

LAYER = 1
REFUSALS = [[1, 5, 6, 7], [1, 8, 9], [1, 5, 9, 6, 7, 8]]  # token prompts standing for questions the model declines


def refusal_batches():
    return [naive.collate([(ids, [-100] * len(ids))]) for ids in REFUSALS]


def prompts(examples):
    return [ids[: labels.index(next(t for t in labels if t != -100))] for ids, labels in examples]


def naive_direction(model):
    refusal = torch.stack([naive.block_output(model, ids, LAYER)[-1] for ids in REFUSALS]).mean(dim=0)
    forget = torch.stack([naive.block_output(model, p, LAYER)[-1] for p in prompts(naive.forget_examples())])
    return refusal - forget.mean(dim=0)


def naive_lunar(model, reference, coeff):
    """sum over every prompt token of the forget and retain questions of ||W x - target||^2, / (rows * d)."""
    direction = naive_direction(reference)
    weight = model.model.layers[LAYER].mlp.down_proj.weight.double()
    original = reference.model.layers[LAYER].mlp.down_proj.weight.double()
    total, rows = 0.0, 0
    for examples, shift in ((naive.forget_examples(), coeff), (naive.retain_examples(), 0.0)):
        for prompt in prompts(examples):
            x = naive.down_proj_inputs(model, prompt, LAYER)
            for t in range(len(prompt)):
                target = original @ x[t] + shift * direction
                total += ((weight @ x[t] - target) ** 2).sum().item()
                rows += 1
    return total / (rows * weight.shape[0])


def prepared(method, model):
    method.use_refusals(model, [naive.forget_batch([0, 1]), naive.forget_batch([2])], refusal_batches())
    return method


def lunar(**values):
    return get_method("lunar", refusal_prompts=["unused: batches are given"], layer=LAYER, **values)


def test_prompt_mask_selects_the_prompt_tokens():
    batch = naive.forget_batch()
    want = [[t < len(p) for t in range(batch["input_ids"].shape[1])] for p in prompts(naive.forget_examples())]
    assert prompt_mask(batch).tolist() == want


def test_direction_is_mean_refusal_minus_mean_forget_last_prompt_state():
    model = naive.tiny_llama()
    method = prepared(lunar(), model)
    assert method._direction.double().tolist() == pytest.approx(naive_direction(model).tolist(), abs=1e-5)


@pytest.mark.parametrize("coeff", [2.0, -0.5])
def test_lunar_loss_matches_formula(coeff):
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = prepared(lunar(coeff=coeff), reference)
    loss, _ = method.loss(model, naive.forget_batch([2, 0, 1]), naive.retain_batch())
    assert loss.item() == pytest.approx(naive_lunar(model, reference, coeff), rel=1e-4)


def test_only_the_layers_down_proj_is_trained():
    model = naive.tiny_llama()
    assert lunar().trainable_parameters(model) == [model.model.layers[LAYER].mlp.down_proj.weight]


def test_training_moves_forget_activations_by_coeff_r_and_keeps_retain():
    """Minimised, the loss moves each forget prompt token's block output by coeff·r and leaves the retain prompts'.
    The first token (BOS) is the same row in every prompt, asked to move and to stay: the optimum splits the
    difference there, so it is left out of the check."""
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.0)
    method = prepared(lunar(coeff=2.0), reference)
    weight = method.trainable_parameters(model)[0]
    optimizer = torch.optim.LBFGS([weight], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    shift = 2.0 * naive_direction(reference)
    for prompt in prompts(naive.forget_examples()):
        moved = naive.block_output(model, prompt, LAYER)[1:] - naive.block_output(reference, prompt, LAYER)[1:]
        assert ((moved - shift).norm(dim=-1) / shift.norm()).max() < 0.05  # every prompt token, not only the last
    for prompt in prompts(naive.retain_examples()):
        moved = naive.block_output(model, prompt, LAYER)[1:] - naive.block_output(reference, prompt, LAYER)[1:]
        assert (moved.norm(dim=-1) / shift.norm()).max() < 0.05


def test_refusal_prompts_are_required_at_validation():
    with pytest.raises(UnlearnkitError, match="refusal_prompts: must be given"):
        get_method("lunar")


def test_layer_out_of_range_is_refused():
    with pytest.raises(UnlearnkitError, match="out of range"):
        get_method("lunar", refusal_prompts=["x"], layer=9).trainable_parameters(naive.tiny_llama())


def test_loss_before_prepare_is_refused():
    with pytest.raises(RuntimeError, match="prepare"):
        lunar().loss(naive.tiny_llama(), naive.forget_batch(), naive.retain_batch())


def test_prepare_formats_the_refusal_prompts_as_the_forget_questions(tmp_path):
    texts = ["Question: Who is Ada Vell?\nAnswer: Ada Vell is a poet.", "Who wrote Nine Rivers?"] * 4
    model, tokenizer = build_tiny(texts, vocab_size=300, hidden_size=32, layers=3, heads=2)
    save_model(model, tokenizer, tmp_path)
    model, tokenizer = load_causal_lm(tmp_path)
    formatter = QAFormatter(tokenizer)
    forget = [formatter.encode("Who is Ada Vell?", "Ada Vell is a poet.")]
    batch = naive.collate([(forget[0].input_ids, forget[0].labels)])
    batch["index"] = torch.tensor([0])
    method = get_method("lunar", refusal_prompts=["Who wrote Nine Rivers?"], layer=LAYER)
    method.prepare(model, [batch])
    refusal = naive.block_output(model, formatter.prompt_ids("Who wrote Nine Rivers?"), LAYER)[-1]
    question = naive.block_output(model, forget[0].prompt_ids, LAYER)[-1]
    assert method._direction.double().tolist() == pytest.approx((refusal - question).tolist(), abs=1e-5)
