from __future__ import annotations

import json

import pytest

from unlearnkit.data.sources import load_task
from unlearnkit.data.synthetic import make_synthetic_task
from unlearnkit.errors import UnlearnkitError


def test_synthetic_options_pass_through():
    task = load_task("synthetic", seed=7, n_people=12, forget_people=2, holdout_people=2)
    assert task == make_synthetic_task(n_people=12, forget_people=2, holdout_people=2, seed=7)


def test_unknown_source_lists_the_sources():
    with pytest.raises(UnlearnkitError, match="unknown data source 'tofuu': use one of synthetic, tofu, custom"):
        load_task("tofuu")


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(UnlearnkitError, match=r"unknown option\(s\) people for data source 'synthetic': accepted "
                                              r"options are n_people, forget_people, holdout_people, seed"):
        load_task("synthetic", people=3)


def test_missing_required_option():
    with pytest.raises(UnlearnkitError, match=r"data source 'custom' needs the option\(s\) retain"):
        load_task("custom", forget="f.jsonl")


def test_custom_task_is_validated(tmp_path):
    row = {"question": "Who?", "answer": "Her."}
    (tmp_path / "f.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "r.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(UnlearnkitError, match="1 row is in both the forget and the retain set"):
        load_task("custom", forget=tmp_path / "f.jsonl", retain=tmp_path / "r.jsonl")


def test_tofu_options_pass_through(monkeypatch):
    monkeypatch.delenv("UNLEARNKIT_TOFU_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnlearnkitError, match="TOFU not found locally"):
        load_task("tofu", split="forget01")
