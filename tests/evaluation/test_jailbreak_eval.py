"""The jailbreak variant of the TOFU evaluation (``eval.jailbreak``) against an independent computation.

OpenUnlearning's variant (``configs/eval/tofu-JB.yaml`` run with the model config
``configs/model/Llama-3.2-1B-Instruct-JB.yaml``) makes the assistant's turn start with "Sure, here is the
answer:" (its ``asst_start_tag``); the answers are scored and generated after it. Here the prompts, the
probabilities and the greedy answers are rebuilt by hand from the raw tokenizer and one example at a time.
"""

import math

import numpy as np
import pytest
import test_tofu_suite
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer
from test_tofu_suite import FORGET, MAX_NEW_TOKENS

from unlearnkit.config import EvalConfig, parse_config
from unlearnkit.data.formatting import IGNORE_INDEX, JAILBREAK_ANSWER_START, QAFormatter
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.scoring.store import model_fingerprint

setup = test_tofu_suite.setup  # the trained tiny model of test_tofu_suite.py, a fixture here too


def jailbreak_prompt(question):
    return f"Question: {question}\nAnswer: Sure, here is the answer:"


def test_the_jailbreak_prompts_are_openunlearnings(setup):
    _, formatter, _ = setup
    backend = formatter.tokenizer.backend_tokenizer
    jailbroken = formatter.with_answer_start(JAILBREAK_ANSWER_START)
    assert JAILBREAK_ANSWER_START == "Sure, here is the answer:"
    for ex in FORGET:
        assert jailbroken.prompt_ids(ex.question) == backend.encode(jailbreak_prompt(ex.question)).ids
        ids = backend.encode(jailbreak_prompt(ex.question) + ex.answer).ids + [formatter.eos_token_id]
        prompt_length = len(backend.encode(jailbreak_prompt(ex.question)).ids)
        joint = jailbroken.with_tokenization("joint").encode(ex.question, ex.answer)  # OpenUnlearning's sequence
        assert (joint.input_ids, joint.labels) == (ids, [IGNORE_INDEX] * prompt_length + ids[prompt_length:])


def test_jailbreak_evaluation_equals_the_naive_computation(setup, tmp_path):
    model, formatter, task = setup
    backend, eos = formatter.tokenizer.backend_tokenizer, formatter.eos_token_id
    config = EvalConfig(jailbreak=True, intervals=False, max_new_tokens=MAX_NEW_TOKENS)
    evaluator = Evaluator(task, formatter, config, metrics=["forget_Q_A_Prob", "forget_Q_A_ROUGE"],
                          cache_dir=tmp_path, progress=False)
    result = evaluator.evaluate(model)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    probs, recalls = [], []
    for ex in FORGET:
        prompt = backend.encode(jailbreak_prompt(ex.question)).ids
        answer = backend.encode(ex.answer).ids + [eos]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        probs.append(math.exp(-F.cross_entropy(logits[len(prompt) - 1:-1], ids[0, len(prompt):]).item()))
        start = torch.tensor([prompt])
        with torch.no_grad():
            out = model.generate(input_ids=start, attention_mask=torch.ones_like(start), do_sample=False,
                                 max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos, pad_token_id=formatter.pad_token_id)
        new = out[0, len(prompt):].tolist()
        new = new[: new.index(eos)] if eos in new else new
        text = formatter.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()
        recalls.append(scorer.score(ex.answer, text)["rougeL"].recall)
    assert result.per_example["forget_Q_A_Prob"] == pytest.approx(probs, abs=1e-5)
    assert result.aggregates["forget_Q_A_ROUGE"] == pytest.approx(np.mean(recalls), abs=1e-9)
    plain = Evaluator(task, formatter, EvalConfig(intervals=False), metrics=["forget_Q_A_Prob"], cache_dir=tmp_path,
                      progress=False).evaluate(model)
    assert plain.per_example["forget_Q_A_Prob"] != pytest.approx(probs, abs=1e-3)  # not served from its store
    assert model_fingerprint(model, formatter) != model_fingerprint(model, evaluator.formatter)


def test_jailbreak_with_a_chat_template_continues_the_generation_prompt(setup):
    _, formatter, _ = setup
    tokenizer = formatter.tokenizer.__class__(tokenizer_object=formatter.tokenizer.backend_tokenizer,
                                              eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    chat = QAFormatter(tokenizer, template="chat", answer_start=JAILBREAK_ANSWER_START)
    assert chat.prompt_text("Q?") == "<|user|>Q?</s><|assistant|>Sure, here is the answer:"
    joint = chat.with_tokenization("joint").encode("Q?", "A.")
    full = "<|user|>Q?</s><|assistant|>Sure, here is the answer:A.</s>"
    assert joint.input_ids == tokenizer.backend_tokenizer.encode(full).ids


def test_jailbreak_is_refused_for_raw_text_tasks_at_config_load():
    with pytest.raises(UnlearnkitError, match="eval.jailbreak"):
        parse_config({"task": {"source": "synthetic_corpus"}, "eval": {"jailbreak": True}})
    assert parse_config({"eval": {"jailbreak": True}}).eval.jailbreak
