"""The gibberish (fluency) score of generated answers: a text classifier's probability that a text is clean.

Reference: OpenUnlearning's ``forget_Q_A_gibberish`` (``configs/eval/tofu_metrics/forget_Q_A_gibberish.yaml``,
handler ``classification_prob`` in ``src/evals/metrics/utility.py``): the greedy forget answers that
``forget_Q_A_ROUGE`` reads are classified by ``madhurjindal/autonlp-Gibberish-Detector-492513457`` (tokenized with
padding, truncated to 512 tokens, batches of 32); per answer the softmax probability of class 0 ("clean"),
aggregate = their mean. Higher = more fluent: an unlearned model that answers its forget questions with word salad
scores low.

The classifier is a model of its own, read from the local Hugging Face cache only (nothing is downloaded during an
evaluation). Where it is not there, asking for the metric stops with a message that names the model and the
command that puts it there; no stand-in classifier is used, since another classifier's probabilities are another
metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unlearnkit.errors import UnlearnkitError

GIBBERISH_CLASSIFIER = "madhurjindal/autonlp-Gibberish-Detector-492513457"
CLEAN_CLASS = 0  # the classifier's "clean" label: OpenUnlearning's class_id
MAX_LENGTH = 512
BATCH_SIZE = 32


def cached_classifier(name: str | None = None) -> str:
    """The local folder of the classifier ``name`` (default :data:`GIBBERISH_CLASSIFIER`) in the Hugging Face cache;
    an :class:`UnlearnkitError` saying how to put it there when it is missing. Cheap: reads the cache, loads
    nothing."""
    from huggingface_hub import snapshot_download

    name = name or GIBBERISH_CLASSIFIER
    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss (not cached, no snapshot, offline) means the same to the user
        raise UnlearnkitError(
            f"the gibberish metric needs the classifier {name} in the local Hugging Face cache, and it is not there: "
            f"run `huggingface-cli download {name}` once on a machine with network access (or copy its cache "
            "folder here), or leave forget_Q_A_gibberish out of the metrics") from None


def load_classifier(name: str | None = None, device: torch.device | str = "cpu"):
    """(tokenizer, model) of the cached classifier, in eval mode on ``device``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = cached_classifier(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()
    return tokenizer, model


def class_probabilities(texts: Sequence[str], tokenizer, classifier, class_id: int = CLEAN_CLASS,
                        max_length: int = MAX_LENGTH, batch_size: int = BATCH_SIZE) -> list[float]:
    """softmax(classifier(text))[class_id] for each text, in right-padded batches truncated to ``max_length``."""
    device = next(classifier.parameters()).device
    out: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length, return_attention_mask=True)
        with torch.inference_mode():
            logits = classifier(**{k: v.to(device) for k, v in batch.items()}).logits
        out += torch.softmax(logits.float(), dim=-1)[:, class_id].cpu().tolist()
    return out
