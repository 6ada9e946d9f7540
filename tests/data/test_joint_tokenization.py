"""``tokenization="joint"`` reproduces OpenUnlearning's token sequences and label masks; ``"separate"`` does not.

The rule (OpenUnlearning ``src/data/utils.py: preprocess_chat_instance``): ids = tokenize(prompt + answer) (the chat
template's rendering of the user turn and the assistant's answer with a chat template), EOS appended unless the
ids already end with it; labels = -100 for the first len(tokenize(prompt)) positions, the ids after. The expected
ids are computed here with the raw ``tokenizers`` object on the concatenated strings, not through the formatter.

The tiny byte-level BPE tokenizer merges the plain prompt's trailing space into the first answer word
("Answer:" "Ġ" + "The" separately, "Answer:" "ĠThe" jointly): the boundary case the option exists for.
"""

import math

import pytest
import torch
from transformers import LlamaForCausalLM

from unlearnkit.config import EvalConfig, parse_config
from unlearnkit.data.formatting import IGNORE_INDEX, QAFormatter
from unlearnkit.data.types import QAExample, Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.scoring.generation import greedy_prefix
from unlearnkit.evaluation.scoring.passes import score_pairs
from unlearnkit.evaluation.scoring.store import model_fingerprint
from unlearnkit.models.tiny import tiny_config, train_tokenizer
from unlearnkit.training.config import TrainConfig

PAIRS = [("Who wrote it?", "The author wrote it."), ("Where was she born?", "She was born in Paris.")]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in PAIRS] * 10
    return train_tokenizer(texts, vocab_size=400)


def openunlearning_plain(tokenizer, question, answer):
    """ids and labels by OpenUnlearning's rule, with the plain template "Question: {q}\\nAnswer: "."""
    prompt = f"Question: {question}\nAnswer: "
    ids = tokenizer.backend_tokenizer.encode(prompt + answer).ids
    prompt_length = len(tokenizer.backend_tokenizer.encode(prompt).ids)
    if ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    return ids, [IGNORE_INDEX] * prompt_length + ids[prompt_length:]


def test_joint_gives_openunlearnings_ids_and_labels_and_separate_does_not(tokenizer):
    separate = QAFormatter(tokenizer, max_length=96, template="plain")
    joint = separate.with_tokenization("joint")
    for question, answer in PAIRS:
        ids, labels = openunlearning_plain(tokenizer, question, answer)
        enc = joint.encode(question, answer)
        assert (enc.input_ids, enc.labels) == (ids, labels)
        apart = separate.encode(question, answer)
        assert apart.input_ids != ids  # the boundary merged: different sequences
        # separately, every answer token (its first word included) is a label; jointly the merged first word is not
        assert apart.labels[apart.prompt_length:] == apart.answer_ids
        first = tokenizer.convert_ids_to_tokens(enc.input_ids[enc.prompt_length - 1])
        assert first == "Ġ" + answer.split()[0]
        assert len(enc.answer_ids) < len(apart.answer_ids)
        assert enc.labels[-1] == tokenizer.eos_token_id  # the EOS is kept in the labels


def test_joint_with_a_chat_template_renders_the_answer_turn(tokenizer):
    tokenizer = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="</s>",
                                    pad_token="<pad>", unk_token="<unk>", bos_token="<s>")
    tokenizer.chat_template = CHAT
    joint = QAFormatter(tokenizer, max_length=96, template="chat", tokenization="joint")
    question, answer = PAIRS[0]
    full = f"<|user|>{question}</s><|assistant|>{answer}</s>"  # the template rendered by hand
    prompt = f"<|user|>{question}</s><|assistant|>"
    ids = tokenizer.backend_tokenizer.encode(full).ids  # already ends with </s>: no second EOS
    prompt_length = len(tokenizer.backend_tokenizer.encode(prompt).ids)
    enc = joint.encode(question, answer)
    assert enc.input_ids == ids and ids[-1] == tokenizer.eos_token_id and ids[-2] != tokenizer.eos_token_id
    assert enc.labels == [IGNORE_INDEX] * prompt_length + ids[prompt_length:]


def test_joint_truncates_as_openunlearning(tokenizer):
    question, answer = PAIRS[1]
    enc = QAFormatter(tokenizer, max_length=16, template="plain", tokenization="joint").encode(question, answer)
    ids = tokenizer.backend_tokenizer.encode(f"Question: {question}\nAnswer: {answer}").ids[:16]
    assert enc.input_ids == ids + [tokenizer.eos_token_id]  # cut at max_length, then the EOS appended


def test_joint_scores_are_openunlearnings_per_token_losses(tokenizer):
    """score_pairs under joint tokenization = OpenUnlearning's evaluate_probability: log p of every label token
    of its sequence, from one full forward pass per example (computed naively here)."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), hidden_size=32, layers=2, heads=2)).eval()
    joint = QAFormatter(tokenizer, max_length=96, template="plain", tokenization="joint")
    pairs = [(q, a) for q, a in PAIRS] + [(PAIRS[0][0], "She wrote it.")]
    scores = score_pairs(model, joint, pairs, batch_size=2)
    for question, answer in pairs:
        ids, labels = openunlearning_plain(tokenizer, question, answer)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        expected = [logp[t - 1, ids[t]].item() for t in range(1, len(ids)) if labels[t] != IGNORE_INDEX]
        assert scores[(question, answer)].token_logprobs == pytest.approx(expected, abs=1e-5)
        # the gold prefix shortcut of generation needs the prompt's own tokens in front of the answer: not here
        assert greedy_prefix(joint, question, answer, scores[(question, answer)]) == []


def test_the_option_reaches_the_evaluator_the_fingerprint_and_the_config(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), hidden_size=32, layers=2, heads=2))
    separate = QAFormatter(tokenizer, max_length=96, template="plain")
    task = Task("toy", forget=[], retain=[], eval_forget=[QAExample(q, a) for q, a in PAIRS])
    cfg = parse_config({"eval": {"tokenization": "joint", "intervals": False}, "train": {"tokenization": "joint"}})
    results = {}
    for name, eval_config in (("joint", cfg.eval), ("separate", EvalConfig(intervals=False))):
        evaluator = Evaluator(task, separate, eval_config, metrics=["forget_Q_A_Prob"], cache_dir=tmp_path,
                              progress=False)
        results[name] = evaluator.evaluate(model).aggregates["forget_Q_A_Prob"]
    expected = []  # OpenUnlearning's probability: exp(-mean NLL over its label tokens), one example at a time
    for question, answer in PAIRS:
        ids, labels = openunlearning_plain(tokenizer, question, answer)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        nll = [-logp[t - 1, ids[t]].item() for t in range(1, len(ids)) if labels[t] != IGNORE_INDEX]
        expected.append(math.exp(-sum(nll) / len(nll)))
    assert results["joint"] == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    assert results["separate"] != pytest.approx(results["joint"], rel=1e-3)  # the same store did not serve it
    assert model_fingerprint(model, separate) != model_fingerprint(model, separate.with_tokenization("joint"))
    assert separate.tokenization == "separate"  # with_tokenization copies
    assert TrainConfig(tokenization="joint").to_dict()["tokenization"] == "joint"
    assert "tokenization" not in TrainConfig().to_dict()  # default runs keep their prepared-model keys
    with pytest.raises(UnlearnkitError, match="eval.tokenization"):
        parse_config({"eval": {"tokenization": "merged"}})
    with pytest.raises(UnlearnkitError, match="separate"):
        QAFormatter(tokenizer, tokenization="merged")


def test_training_tokenization_keys_the_prepared_models_and_their_formatter(tokenizer, monkeypatch, tmp_path):
    """prepare.tokenization reaches the prepared-model key (joint-trained models are cached apart) and the formatter
    that encodes the fine-tuning examples."""
    from unlearnkit.models import prepare

    task = Task("toy", forget=[QAExample(*PAIRS[0])], retain=[QAExample(*PAIRS[1])])
    keys = {t: prepare.prepare_key(task, "tiny", TrainConfig(tokenization=t), 96, "plain", 0)
            for t in ("separate", "joint")}
    assert keys["separate"] != keys["joint"]
    seen = []
    monkeypatch.setattr(prepare, "load_base", lambda *args: (None, tokenizer))
    monkeypatch.setattr(prepare, "training_items", lambda examples, formatter: seen.append(formatter) or [])
    monkeypatch.setattr(prepare, "train", lambda *args, **kwargs: None)
    monkeypatch.setattr(prepare, "save_model", lambda *args: None)
    prepare._prepare_one(tmp_path / "target", "target", task.full, task, "tiny", TrainConfig(tokenization="joint"),
                         96, "plain", 0, tmp_path, False, keys["joint"], False, lambda *a: None)
    assert [f.tokenization for f in seen] == ["joint"]
