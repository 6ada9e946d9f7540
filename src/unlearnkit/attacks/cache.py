"""Attack results kept per model, so runs that share a target and a retain model attack them once.

Every run unlearned from the same prepared models attacks the same target and retain models with the same settings,
and gets the same numbers. An attack's outcome on a model is therefore kept in the model's folder of the result
store (``<cache>/scores/<fingerprint>/attack-<key>.json``, :meth:`Evaluator.model_folder`), keyed by the attack's
name and settings (examples, steps, seeds, metrics …), the evaluator's settings (task splits, metrics, batch size,
answer length, stored-score versions) and the retain model's reference statistics. A changed weight, formatting,
task, setting or version is another key: nothing stale is read. Written atomically (:func:`unlearnkit.runio.write_json`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, TypeVar

from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.scoring.store import settings_key
from unlearnkit.runio import write_json

T = TypeVar("T")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def cached_attack(evaluator: Evaluator, model, kind: str, settings: dict, reference: dict | None,
                  compute: Callable[[], T], encode: Callable[[T], dict], decode: Callable[[dict], T]) -> T:
    """``compute()``'s outcome of attack ``kind`` on ``model``, read from the store when kept, else computed and kept."""
    key = settings_key(f"attack-{kind}", {"attack": settings, "evaluator": _digest(evaluator.settings()),
                                           "reference": _digest(reference)})
    path = evaluator.model_folder(model) / f"{key}.json"
    if path.is_file():
        try:
            return decode(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable (a damaged cache file): computed again and rewritten
    outcome = compute()
    write_json(path, encode(outcome))
    return outcome
