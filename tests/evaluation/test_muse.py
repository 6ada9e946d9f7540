"""MUSE VerbMem / KnowMem pieces (unlearnkit.evaluation.metrics.muse, pure): stop strings, prompt format, prompts
and references, cutting and scoring, ROUGE-L F1 against hand-worked values. That the suite's generation equals a
naive one-example-at-a-time computation is tested in test_muse_generation.py."""

import pytest
from muse_fixtures import naive_rouge_l_f1, task, tokenizer  # noqa: F401  (fixtures)
from tokenizers import processors

from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics.muse import (
    _leading_special_ids,
    cut_at_stop_strings,
    knowmem_examples,
    knowmem_prompt,
    knowmem_prompts,
    mean_rouge,
    rouge_l_f1,
    verbmem_examples,
    verbmem_prompts,
)
from unlearnkit.models.tiny import train_tokenizer


def test_rouge_l_f1_by_hand():
    # LCS("the cat sat on the mat", "the cat on a mat") = "the cat on mat" = 4; P = 4/5, R = 4/6, F1 = 8/11
    assert rouge_l_f1("the cat sat on the mat", "the cat on a mat") == pytest.approx(8 / 11, abs=1e-12)
    assert rouge_l_f1("The Cat!", "the\ncat") == 1.0  # lowercased, punctuation and whitespace ignored
    assert rouge_l_f1("running", "run") == 0.0  # no stemming, as MUSE's RougeEvalLogger
    assert rouge_l_f1("anything", "") == 0.0


def test_cut_at_stop_strings_on_hand_made_strings():
    assert cut_at_stop_strings("Velmora.\n\nQuestion: next?") == "Velmora."
    assert cut_at_stop_strings("Velmora.\nQuestion: next?") == "Velmora."
    assert cut_at_stop_strings("Velmora. Question: next?") == "Velmora. "
    assert cut_at_stop_strings("a\nb\n\nc") == "a\nb"
    assert cut_at_stop_strings("\n\nVelmora") == ""
    assert cut_at_stop_strings("Question about it") == "Question about it"  # "Question" without ':' stays
    assert cut_at_stop_strings("no stop here\n") == "no stop here\n"


def test_knowmem_prompt_exact_format():
    shots = [QAExample("Q one?", "A one."), QAExample("Q two?", "A two.")]
    assert knowmem_prompt("Q three?", shots) == (
        "Question: Q one?\nAnswer: A one.\n\nQuestion: Q two?\nAnswer: A two.\n\nQuestion: Q three?\nAnswer: ")
    assert knowmem_prompt("Q?") == "Question: Q?\nAnswer: "


def test_prompt_keeps_the_tokenizers_leading_special_tokens(tokenizer):
    text = "Velmora is the capital of Ardenia."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert _leading_special_ids(tokenizer, text, ids) == []
    with_bos = train_tokenizer([text], vocab_size=300)
    with_bos._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", with_bos.bos_token_id)])
    ids = with_bos(text, add_special_tokens=False)["input_ids"]
    assert with_bos(text)["input_ids"] == [with_bos.bos_token_id] + ids
    assert _leading_special_ids(with_bos, text, ids) == [with_bos.bos_token_id]


def test_verbmem_prompts_cut_each_text_at_the_prefix(tokenizer, task):
    texts = task.chunked(tokenizer, 48).forget + ["A short text."]  # a chunk too short for a prefix: skipped
    prompts, prefixes, references, skipped = verbmem_prompts(tokenizer, texts, prefix_tokens=16, max_new_tokens=24)
    kept = [t for t in texts if len(tokenizer(t)["input_ids"]) > 16]  # this tokenizer adds no special tokens
    assert skipped == len(texts) - len(kept) >= 1 and len(prompts) == len(kept) >= 5
    for text, prompt, prefix, reference in zip(kept, prompts, prefixes, references):
        ids = tokenizer(text)["input_ids"]
        assert prompt == ids[:16]
        assert prefix == tokenizer.decode(ids[:16], skip_special_tokens=True)
        assert reference == tokenizer.decode(ids[16:40], skip_special_tokens=True)


def test_verbmem_skips_short_texts_and_fails_when_all_are_short(tokenizer):
    long_text = "Born in Velmora, Ardenia, the writer wrote many books about the sea and the city. " * 3
    prompts, _, _, skipped = verbmem_prompts(tokenizer, ["too short", long_text], prefix_tokens=8, max_new_tokens=4)
    assert (len(prompts), skipped) == (1, 1)
    assert verbmem_prompts(tokenizer, [], prefix_tokens=8) == ([], [], [], 0)
    with pytest.raises(UnlearnkitError, match="prefix_tokens=8"):
        verbmem_prompts(tokenizer, ["too short", "also short"], prefix_tokens=8)
    with pytest.raises(UnlearnkitError, match="prefix_tokens must be at least 1"):
        verbmem_prompts(tokenizer, [long_text], prefix_tokens=0)


def test_knowmem_prompts_are_tokenized_with_special_tokens(tokenizer):
    shots = [QAExample("Q one?", "A one.")]
    qa = [QAExample("Q two?", "A two."), QAExample("Q three?", "A three.")]
    texts, ids = knowmem_prompts(tokenizer, qa, shots)
    assert texts == [knowmem_prompt(ex.question, shots) for ex in qa]
    assert ids == [tokenizer(text)["input_ids"] for text in texts]


def test_examples_cut_then_strip_then_score():
    qa = [QAExample("Where?", "Velmora"), QAExample("Who?", "Ana Ruiz"), QAExample("When?", "In 1998")]
    # cut before stripping: a generation that opens with a stop string is empty, as in the reference
    generations = [" Velmora.\nQuestion: next?", "\n\nAna Ruiz", "In 1998 Question: and then"]
    examples = knowmem_examples(["p1", "p2", "p3"], qa, generations)
    assert [ex.generation for ex in examples] == ["Velmora.", "", "In 1998"]
    assert [ex.rougeL_f1 for ex in examples] == [1.0, 0.0, 1.0]
    assert [(ex.prompt, ex.reference) for ex in examples] == [("p1", "Velmora"), ("p2", "Ana Ruiz"), ("p3", "In 1998")]
    verb = verbmem_examples(["the cat"], ["sat on the mat"], ["  sat on a mat\n"])
    assert verb[0].generation == "sat on a mat"
    assert verb[0].rougeL_f1 == pytest.approx(naive_rouge_l_f1("sat on the mat", "sat on a mat"), abs=1e-12)
    assert mean_rouge(examples) == pytest.approx(2 / 3) and mean_rouge([]) is None
