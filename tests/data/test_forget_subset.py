"""task.forget_subset (data/subset.py): the subset's size, its determinism under the seed, hardest/easiest ordered by
the target's per-example forget loss (mean answer-token NLL, recomputed here one unpadded example at a time), and
the one-line config errors."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unlearnkit.config import parse_config
from unlearnkit.data.formatting import Encoded
from unlearnkit.data.subset import choose_forget_subset, forget_losses, select_subset, subset_size
from unlearnkit.errors import UnlearnkitError


@pytest.mark.parametrize(("n", "fraction", "k"), [(20, 0.05, 1), (20, 0.1, 2), (20, 0.25, 5), (20, 1.0, 20),
                                                  (3, 0.5, 2), (40, 0.01, 1), (7, 0.3, 2)])
def test_subset_size_rounds_half_up_and_keeps_at_least_one(n, fraction, k):
    assert subset_size(n, fraction) == k
    assert len(select_subset(n, fraction, "random", seed=3)) == k


def test_random_subset_is_deterministic_under_its_seed():
    first = select_subset(50, 0.2, "random", seed=7)
    assert first == select_subset(50, 0.2, "random", seed=7)
    assert first == sorted(set(first)) and all(0 <= i < 50 for i in first)
    others = {tuple(select_subset(50, 0.2, "random", seed=s)) for s in range(5)}
    assert len(others) == 5  # different seeds draw different subsets
    # the draw is torch's seeded permutation: the same on every machine and process
    assert first == sorted(torch.randperm(50, generator=torch.Generator().manual_seed(7))[:10].tolist())


def test_hardest_and_easiest_order_by_the_forget_loss():
    losses = [2.0, 0.5, 3.0, 0.5, 1.0, 4.0, 0.1, 2.5]
    hardest = select_subset(8, 0.5, "hardest", losses=losses)
    easiest = select_subset(8, 0.5, "easiest", losses=losses)
    assert hardest == [1, 3, 4, 6]  # lowest NLL = best remembered
    assert easiest == [0, 2, 5, 7]
    kept, dropped = [losses[i] for i in hardest], [losses[i] for i in range(8) if i not in hardest]
    assert max(kept) <= min(dropped)
    assert select_subset(8, 0.25, "hardest", losses=losses) == [1, 6]  # the tie at 0.5 goes to the lower index
    with pytest.raises(ValueError, match="one forget loss per item"):
        select_subset(8, 0.5, "hardest")


def tiny_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


ITEMS = [Encoded([1, 5, 6, 7, 8, 2], [-100, -100, 6, 7, 8, 2], 2), Encoded([1, 9, 10, 2], [-100, -100, 10, 2], 2),
         Encoded([1, 11, 12, 13, 14, 15, 16, 2], [-100, -100, -100, -100, 14, 15, 16, 2], 4),
         Encoded([1, 3, 4, 2], [-100, -100, 4, 2], 2)]


def naive_nll(model, item):
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([item.input_ids])).logits[0].double(), dim=-1)
    terms = [-logp[t - 1, item.labels[t]].item() for t in range(1, len(item.labels)) if item.labels[t] != -100]
    return sum(terms) / len(terms)


def test_forget_losses_are_each_items_mean_answer_nll():
    model = tiny_model()
    got = forget_losses(model, ITEMS, pad_token_id=0, batch_size=3)  # padded batches of 3 and 1
    assert got == pytest.approx([naive_nll(model, item) for item in ITEMS], abs=1e-5)


def test_choose_forget_subset_scores_with_the_model():
    model = tiny_model()
    want = sorted(range(4), key=lambda i: naive_nll(model, ITEMS[i]))[:2]
    assert choose_forget_subset(model, ITEMS, 0, 0.5, "hardest", seed=0) == sorted(want)


@pytest.mark.parametrize(("subset", "message"), [({"fraction": 0}, "greater than 0"), ({"fraction": 2}, "less than"),
                                                 ({"fraction": 0.1, "strategy": "hard"}, "'random', 'hardest'"),
                                                 ({"fraction": 0.1, "seeds": 1}, "unknown config key")])
def test_bad_forget_subset_is_one_line_at_load(subset, message):
    with pytest.raises(UnlearnkitError, match=message) as info:
        parse_config({"task": {"forget_subset": subset}})
    assert "task.forget_subset" in str(info.value) and "\n" not in str(info.value)
