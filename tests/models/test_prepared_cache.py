"""Integrity of the prepared-model cache (issue #20, point 4; models/prepared.py): each prepared folder lists its
files' sizes and xxh3-128 digests when written; on use a changed, missing or unlisted-as-written file is a one-line
CacheError naming the folder and how to rebuild it, never silent use; ``force`` rebuilds it. The digests are
checked here against xxhash run on the files' bytes by the test itself."""

import json

import pytest
import xxhash

from unlearnkit.data.synthetic import make_synthetic_task
from unlearnkit.errors import CacheError
from unlearnkit.models import prepare as prepare_module
from unlearnkit.models.prepare import RECIPES, prepare_models
from unlearnkit.models.prepared import MANIFEST, verify_prepared

TASK = make_synthetic_task(n_people=4, forget_people=1, holdout_people=1)
RECIPE = RECIPES["tiny"].model_copy(update={"epochs": 1, "batch_size": 16})


def _prepare(cache, **kwargs):
    return prepare_models(TASK, "tiny", RECIPE, max_length=64, cache_dir=cache, progress=False, log=lambda m: None,
                          **kwargs)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, _prepare(cache)


def _flip(path, offset=-1):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_every_written_file_is_listed_with_its_size_and_digest(prepared):
    _, models = prepared
    for folder in (models.target, models.retain):
        listing = json.loads((folder / MANIFEST).read_text())
        assert listing["algorithm"] == "xxh3_128"
        on_disk = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
        assert set(listing["files"]) == on_disk and "model.safetensors" in on_disk
        for name, entry in listing["files"].items():
            data = (folder / name).read_bytes()
            assert entry == {"size": len(data), "xxh3_128": xxhash.xxh3_128(data).hexdigest()}


def test_a_flipped_byte_is_refused_then_force_rebuilds_the_same_model(prepared, tmp_path, monkeypatch):
    cache, models = prepared
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    weights = copy / "prepared" / models.key / "retain" / "model.safetensors"
    original = weights.read_bytes()
    verify_prepared(weights.parent)  # sound, and remembered as sound for these files
    _flip(weights)

    def no_training(*args, **kwargs):
        raise AssertionError("a damaged cache must not be trained over silently")

    monkeypatch.setattr(prepare_module, "train", no_training)
    with pytest.raises(CacheError) as caught:
        _prepare(copy)
    message = str(caught.value)
    assert message == (f"cached prepared model {weights.parent} is damaged (model.safetensors differs from what was "
                       f"written): rebuild it with `unlearnkit prepare CONFIG --force` (the run's config), or delete "
                       f"{weights.parent.parent}")
    monkeypatch.undo()
    _prepare(copy, force=True)
    assert weights.read_bytes() == original  # the same seed and data: the rebuilt model is the one first written
    verify_prepared(weights.parent)


@pytest.mark.parametrize("damage, problem", [
    (lambda folder: (folder / MANIFEST).unlink(), f"{MANIFEST} is missing"),
    (lambda folder: (folder / MANIFEST).write_text("{"), f"{MANIFEST} is unreadable"),
    (lambda folder: (folder / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    (lambda folder: (folder / "config.json").write_text((folder / "config.json").read_text() + " "),
     "config.json has"),
])
def test_a_damaged_folder_names_the_problem(prepared, tmp_path, damage, problem):
    import shutil

    _, models = prepared
    folder = tmp_path / "target"
    shutil.copytree(models.target, folder)
    damage(folder)
    with pytest.raises(CacheError, match="^cached prepared model .* is damaged \\(" + problem.replace(".", "\\.")):
        verify_prepared(folder)
