"""TOFU loader against the real files in ../shared/data/tofu (or $UNLEARNKIT_TOFU_DIR); never the network."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from unlearnkit.data import tofu
from unlearnkit.data.synthetic import BUILTIN_IDK_ANSWERS
from unlearnkit.data.tofu import load_tofu
from unlearnkit.errors import UnlearnkitError


def _tofu_dir() -> Path | None:
    candidates = [os.environ.get("UNLEARNKIT_TOFU_DIR"), Path(__file__).parents[2].parent / "shared" / "data" / "tofu"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "full.json").is_file():
            return Path(candidate)
    return None


TOFU_DIR = _tofu_dir()
needs_tofu = pytest.mark.skipif(TOFU_DIR is None, reason="TOFU files not found (../shared/data/tofu or $UNLEARNKIT_TOFU_DIR)")


def _pairs(examples) -> list[tuple[str, str]]:
    return [(ex.question, ex.answer) for ex in examples]


@pytest.fixture(scope="module")
def full_rows() -> list[tuple[str, str]]:
    """full.json read independently of the loader: (question, answer) per row; author k = rows 20k..20k+19."""
    with open(TOFU_DIR / "full.json", encoding="utf-8") as f:
        return [(row["question"], row["answer"]) for row in map(json.loads, f) if row]


@pytest.fixture(autouse=True)
def _no_env_dir(monkeypatch):
    monkeypatch.delenv("UNLEARNKIT_TOFU_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@needs_tofu
@pytest.mark.parametrize("split,n_authors", [("forget01", 2), ("forget05", 10), ("forget10", 20)])
def test_splits_follow_author_layout_of_full(split, n_authors, full_rows):
    task = load_tofu(split, data_dir=TOFU_DIR)
    n = 20 * n_authors
    assert len(task.forget) == n
    assert _pairs(task.forget) == full_rows[-n:]  # the LAST authors of full.json
    assert _pairs(task.holdout) == full_rows[-2 * n:-n]  # carved: the authors just before them
    assert _pairs(task.retain) == full_rows[: 4000 - 2 * n]
    assert len(task.retain) == 4000 - 2 * n  # e.g. forget10: retain90 (3600) minus 400 carved
    assert task.name == f"tofu-{split}"


@needs_tofu
def test_forget10_eval_splits_carry_their_fields():
    task = load_tofu("forget10", data_dir=TOFU_DIR)
    assert len(task.eval_forget) == 400
    assert _pairs(task.eval_forget) == _pairs(task.forget)
    for ex in task.eval_forget + task.eval_retain:
        assert ex.paraphrased_question and ex.paraphrased_answer
        assert len(ex.perturbed_answers) == 5
    assert len(task.real_authors) == 100 and len(task.world_facts) == 117
    for ex in task.real_authors + task.world_facts:
        assert ex.answer and len(ex.perturbed_answers) == 3
    assert task.real_authors[0].question == "Who wrote the play 'Romeo and Juliet'?"
    assert task.real_authors[0].answer == "William Shakespeare"
    assert len(task.idk_answers) == 100
    with open(TOFU_DIR / "idontknow.jsonl", encoding="utf-8") as f:
        assert task.idk_answers[0] == f.readline().strip()


@needs_tofu
@pytest.mark.parametrize("split", ["forget01", "forget05", "forget10"])
def test_carved_holdout_is_disjoint_from_retain_perturbed(split, full_rows):
    task = load_tofu(split, data_dir=TOFU_DIR)
    holdout_authors = {full_rows.index(pair) // 20 for pair in _pairs(task.holdout)}
    eval_retain_authors = {full_rows.index(pair) // 20 for pair in _pairs(task.eval_retain)}
    assert eval_retain_authors == set(range(20))
    assert not holdout_authors & eval_retain_authors
    assert len(task.eval_retain) == 400  # nothing of retain_perturbed was lost to the carving
    assert set(_pairs(task.eval_retain)) <= set(_pairs(task.retain))


@needs_tofu
def test_holdout_none_keeps_the_whole_retain_split():
    task = load_tofu("forget05", data_dir=TOFU_DIR, holdout="none")
    assert task.holdout == [] and len(task.retain) == 3800
    assert task.name == "tofu-forget05-holdout_none"


@needs_tofu
def test_holdout_file_reads_the_holdout_file(tmp_path):
    folder = tmp_path / "tofu"
    shutil.copytree(TOFU_DIR, folder)
    rows = [{"question": f"Who is unseen author {i}?", "answer": f"Unseen author {i}."} for i in range(40)]
    (folder / "holdout01.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_tofu("forget01", data_dir=folder, holdout="file")
    assert _pairs(task.holdout) == [(r["question"], r["answer"]) for r in rows]
    assert len(task.retain) == 3960


@needs_tofu
def test_holdout_file_missing_names_the_file():
    with pytest.raises(UnlearnkitError, match=r"lacks holdout10\.json.*holdout='carve'"):
        load_tofu("forget10", data_dir=TOFU_DIR, holdout="file")


@needs_tofu
def test_retain_authors_keeps_the_first_authors(full_rows):
    task = load_tofu("forget10", data_dir=TOFU_DIR, retain_authors=3)
    assert _pairs(task.retain) == full_rows[:60]
    assert _pairs(task.eval_retain) == full_rows[:60]  # retain_perturbed rows of those 3 authors only
    assert len(task.forget) == 400 and len(task.holdout) == 400
    with pytest.raises(UnlearnkitError, match="retain_authors <= 160"):
        load_tofu("forget10", data_dir=TOFU_DIR, retain_authors=161)


@needs_tofu
def test_env_var_locates_the_folder(monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_TOFU_DIR", str(TOFU_DIR))
    assert len(load_tofu("forget01").forget) == 40


def test_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(UnlearnkitError, match=f"TOFU folder {re.escape(str(missing))}.*does not exist"):
        load_tofu("forget10", data_dir=missing)


def test_env_var_pointing_nowhere_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_TOFU_DIR", str(tmp_path / "gone"))
    with pytest.raises(UnlearnkitError, match="gone.*UNLEARNKIT_TOFU_DIR"):
        load_tofu("forget10")


@needs_tofu
def test_folder_missing_a_file_names_folder_and_file(tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(TOFU_DIR, folder)
    (folder / "retain_perturbed.json").unlink()
    with pytest.raises(UnlearnkitError, match=f"TOFU folder {re.escape(str(folder))} lacks retain_perturbed.json"):
        load_tofu("forget10", data_dir=folder)


@needs_tofu
def test_folder_without_idk_file_falls_back_to_builtin_refusals(tmp_path):
    folder = tmp_path / "no-idk"
    shutil.copytree(TOFU_DIR, folder)
    (folder / "idontknow.jsonl").unlink()
    assert load_tofu("forget01", data_dir=folder).idk_answers == list(BUILTIN_IDK_ANSWERS)


@needs_tofu
def test_truncated_split_is_rejected(tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(TOFU_DIR, folder)
    lines = (folder / "forget01.json").read_text().splitlines(keepends=True)
    (folder / "forget01.json").write_text("".join(lines[:-1]))
    with pytest.raises(UnlearnkitError, match="forget01 has 39 rows.*expected 40"):
        load_tofu("forget01", data_dir=folder)


def test_offline_without_folder_raises_without_network():
    with pytest.raises(UnlearnkitError, match=r"TOFU not found locally: pass --data-dir DIR or set UNLEARNKIT_TOFU_DIR \(HF_HUB_OFFLINE"):
        load_tofu("forget10")


def test_bad_options_are_rejected():
    with pytest.raises(UnlearnkitError, match="unknown TOFU split 'forget20'"):
        load_tofu("forget20")
    with pytest.raises(UnlearnkitError, match="unknown holdout 'random'"):
        load_tofu("forget10", holdout="random")
    with pytest.raises(UnlearnkitError, match="retain_authors=0"):
        load_tofu("forget10", retain_authors=0)


@needs_tofu
def test_hub_path_reads_the_configs_and_falls_back_for_idk(monkeypatch):
    """The hub branch, with ``datasets.load_dataset`` replaced by a fake that serves the local files."""
    datasets = pytest.importorskip("datasets")
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    requested = []

    def fake_load_dataset(path, name, split):
        assert (path, split) == ("locuslab/TOFU", "train")
        requested.append(name)
        with open(TOFU_DIR / f"{name}.json", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def failing_download(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    task = load_tofu("forget01")
    assert len(task.forget) == 40 and len(task.retain) == 3920 and len(task.eval_retain) == 400
    assert {"forget01", "retain99", "forget01_perturbed", "retain_perturbed"} <= set(requested)
    assert task.idk_answers == list(BUILTIN_IDK_ANSWERS)


def test_hub_failure_is_reported_as_not_found(monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(UnlearnkitError, match=r"TOFU not found locally.*ConnectionError: hub unreachable"):
        load_tofu("forget10")


def test_holdout_file_names_match_the_hub_configs():
    assert [tofu._holdout_file_name(s) for s in tofu.SPLITS] == ["holdout01", "holdout05", "holdout10"]
