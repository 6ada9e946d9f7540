"""The fine-tuning objective against a one-token-at-a-time computation."""

import math

import torch

from training_fixtures import PAD, make_examples, tiny_llama
from unlearnkit.data.formatting import IGNORE_INDEX, collate
from unlearnkit.training.objectives import FineTune, mean_token_nll


def naive_mean_token_nll(logits: list[list[list[float]]], labels: list[list[int]]) -> float:
    """−log softmax(logits[b][t])[labels[b][t+1]] averaged over every target token of every row."""
    terms = []
    for row_logits, row_labels in zip(logits, labels):
        for t in range(len(row_labels) - 1):
            target = row_labels[t + 1]
            if target == IGNORE_INDEX:
                continue
            scores = row_logits[t]
            log_normaliser = math.log(sum(math.exp(s) for s in scores))
            terms.append(log_normaliser - scores[target])
    return sum(terms) / len(terms)


def test_mean_token_nll_by_hand():
    # vocabulary of 3, two rows: row 0 has targets at positions 1 and 2, row 1 only at position 2 (3 tokens in all)
    logits = [[[0.0, 0.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.0, 0.0]],
              [[3.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]
    labels = [[IGNORE_INDEX, 2, 1], [IGNORE_INDEX, IGNORE_INDEX, 0]]
    # by hand: row 0 t=0 → uniform, −log(1/3); t=1 → target 1 of (1, 2, 0.5); row 1 t=1 → target 0 of (0, 1, 0)
    hand = (math.log(3)
            + (math.log(math.exp(1) + math.exp(2) + math.exp(0.5)) - 2.0)
            + (math.log(2 + math.e) - 0.0)) / 3
    assert math.isclose(naive_mean_token_nll(logits, labels), hand, rel_tol=1e-12)
    got = mean_token_nll(torch.tensor(logits), torch.tensor(labels))
    assert math.isclose(got.item(), hand, rel_tol=1e-6)


def test_finetune_loss_on_the_tiny_llama_matches_the_naive_computation():
    model = tiny_llama().eval()
    batch = collate(make_examples(3, seed=4), PAD)
    with torch.no_grad():
        loss, logs = FineTune().loss(model, batch, None)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = naive_mean_token_nll(logits.double().tolist(), batch["labels"].tolist())
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    assert logs == {"nll": loss.item()}
