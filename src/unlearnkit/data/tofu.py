"""TOFU: Task of Fictitious Unlearning (Maini et al., 2024, "TOFU: A Task of Fictitious Unlearning for LLMs",
arXiv:2401.06121), loaded from a local folder or the Hugging Face hub (``locuslab/TOFU``).

TOFU has 200 fictitious authors with 20 QA each; in ``full.json`` author k is rows 20k..20k+19. ``forget01/05/10``
are the LAST 2/10/20 authors and ``retain99/95/90`` all the others, in the same order. Evaluation splits:
``forgetXX_perturbed`` and ``retain_perturbed`` (paraphrased question and answer, 5 perturbed answers; the latter
covers the first 20 authors), ``real_authors_perturbed`` and ``world_facts_perturbed`` (answer + 3 perturbed
answers). The local files are JSON Lines despite the ``.json`` ending.

Where the data comes from, first match wins: the ``data_dir`` argument, the ``UNLEARNKIT_TOFU_DIR`` environment
variable, the hub (skipped, with an error, when ``HF_HUB_OFFLINE`` is set).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from unlearnkit.data.custom import load_idk_file, load_qa_file, qa_example_from_row
from unlearnkit.data.idk import BUILTIN_IDK_ANSWERS
from unlearnkit.data.types import QAExample, Task
from unlearnkit.errors import DataError, UnlearnkitError

log = logging.getLogger(__name__)

HUB_ID = "locuslab/TOFU"
DIR_ENV_VAR = "UNLEARNKIT_TOFU_DIR"
IDK_FILE = "idontknow.jsonl"
ROWS_PER_AUTHOR = 20
# forget split -> (matching retain split, number of forget authors)
SPLITS: dict[str, tuple[str, int]] = {"forget01": ("retain99", 2), "forget05": ("retain95", 10),
                                      "forget10": ("retain90", 20)}
HOLDOUT_MODES = ("carve", "none", "file")
_TRUE_ENV_VALUES = {"1", "on", "yes", "true"}

ReadSplit = Callable[[str], list[QAExample]]


def _folder_reader(folder: Path, origin: str) -> ReadSplit:
    """Reads ``{name}.json`` from ``folder``; ``origin`` says where the folder was given, for error messages."""
    if not folder.is_dir():
        raise DataError(f"TOFU folder {folder} (from {origin}) does not exist: pass --data-dir DIR or set "
                              f"{DIR_ENV_VAR} to the folder holding the TOFU files (forget10.json, ...)")

    def read(name: str) -> list[QAExample]:
        return load_qa_file(folder / f"{name}.json")

    return read


def _hub_offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in _TRUE_ENV_VALUES
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _not_found(reason: str) -> DataError:
    return DataError(f"TOFU not found locally: pass --data-dir DIR or set {DIR_ENV_VAR} ({reason})")


def _hub_reader() -> ReadSplit:
    """Reads one config of ``locuslab/TOFU`` with ``datasets.load_dataset`` (its ``train`` split)."""
    if _hub_offline():
        raise _not_found(f"HF_HUB_OFFLINE is set, so the hub copy {HUB_ID} was not tried")

    def read(name: str) -> list[QAExample]:
        try:
            from datasets import load_dataset

            rows = load_dataset(HUB_ID, name, split="train")
        except Exception as err:  # network, authentication, unknown config: all mean "not available here"
            raise _not_found(f"the hub copy {HUB_ID}, config {name}, failed: {type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}") from err
        return [qa_example_from_row(row, f"{HUB_ID} {name}, row {i}") for i, row in enumerate(rows, start=1)]

    return read


def _folder_idk(folder: Path) -> list[str]:
    if (folder / IDK_FILE).is_file():
        return load_idk_file(folder / IDK_FILE)
    log.warning("%s has no %s: using unlearnkit's built-in refusal answers for IdkNLL/IdkDPO", folder, IDK_FILE)
    return list(BUILTIN_IDK_ANSWERS)


def _hub_idk() -> list[str]:
    try:
        from huggingface_hub import hf_hub_download

        return load_idk_file(hf_hub_download(HUB_ID, IDK_FILE, repo_type="dataset"))
    except Exception as err:  # the file is not a dataset config; any failure falls back
        log.warning("could not download %s from %s (%s): using unlearnkit's built-in refusal answers",
                    IDK_FILE, HUB_ID, type(err).__name__)
        return list(BUILTIN_IDK_ANSWERS)


def _needed_files(split: str, holdout: str) -> list[str]:
    retain_split = SPLITS[split][0]
    names = [split, retain_split, f"{split}_perturbed", "retain_perturbed", "real_authors_perturbed",
             "world_facts_perturbed"]
    if holdout == "file":
        names.append(_holdout_file_name(split))
    return names


def _holdout_file_name(split: str) -> str:
    return "holdout" + split.removeprefix("forget")


def _read_holdout_file(read: ReadSplit, split: str, from_hub: bool) -> list[QAExample]:
    name = _holdout_file_name(split)
    try:
        return read(name)
    except UnlearnkitError as err:
        if not from_hub:
            raise
        raise DataError(f"TOFU {name} could not be read from the hub {HUB_ID} ({err.__cause__!r}): use "
                              f"holdout='carve' or 'none', or pass --data-dir DIR holding {name}.json") from err


def _check_options(split: str, holdout: str, retain_authors: int | None) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown TOFU split '{split}': use one of {', '.join(SPLITS)}")
    if holdout not in HOLDOUT_MODES:
        raise DataError(f"unknown holdout '{holdout}': use one of {', '.join(HOLDOUT_MODES)}")
    if retain_authors is not None and (not isinstance(retain_authors, int) or retain_authors < 1):
        raise DataError(f"retain_authors={retain_authors!r}: give a whole number >= 1, or leave it unset "
                              "to keep every retain author")


def _check_author_rows(forget: list[QAExample], retain: list[QAExample], split: str) -> None:
    n_forget_authors = SPLITS[split][1]
    if len(forget) != n_forget_authors * ROWS_PER_AUTHOR or len(retain) % ROWS_PER_AUTHOR:
        raise DataError(f"TOFU {split} has {len(forget)} rows and {SPLITS[split][0]} {len(retain)}, "
                              f"expected {n_forget_authors * ROWS_PER_AUTHOR} and a multiple of "
                              f"{ROWS_PER_AUTHOR} (20 QA per author): use the TOFU files unchanged")


def _task_name(split: str, holdout: str, retain_authors: int | None) -> str:
    name = f"tofu-{split}"
    if holdout != "carve":
        name += f"-holdout_{holdout}"
    if retain_authors is not None:
        name += f"-r{retain_authors}"
    return name


def load_tofu(split: str = "forget10", data_dir: str | Path | None = None, holdout: str = "carve",
              retain_authors: int | None = None) -> Task:
    """The TOFU task for ``split`` (forget01, forget05 or forget10) and its matching retain split.

    ``holdout`` chooses the membership-inference holdout (people no model was trained on):

    - ``"carve"`` (default): the same number of authors as the forget split, taken from the end of the retain
      split (the authors just before the forget authors in ``full.json``) and removed from ``retain``, so that
      unlearnkit's own ``prepare`` never trains on them. Valid only for a target model that unlearnkit fine-tunes
      itself: a published TOFU checkpoint was trained on all 4000 rows, carved authors included.
      For forget10 the carved authors are 160..179, disjoint from ``retain_perturbed`` (authors 0..19).
    - ``"none"``: empty holdout (membership inference is skipped).
    - ``"file"``: ``holdout01/05/10.json`` from the folder, or the hub configs of the same names (authors that are
      not in ``full.json``).

    ``retain_authors`` keeps only the first N retain authors (rows 20k..20k+19) for quick runs; ``eval_retain``
    then keeps only the ``retain_perturbed`` rows of those authors (it always keeps exactly the
    ``retain_perturbed`` rows that are in ``retain``). ``None`` keeps them all.

    ``idk_answers`` are the lines of ``idontknow.jsonl`` (from the folder, or downloaded from the hub where it is a
    plain file, not a dataset config); when it is unavailable the built-in refusal list
    :data:`unlearnkit.data.idk.BUILTIN_IDK_ANSWERS` is used instead and a warning is logged.
    """
    _check_options(split, holdout, retain_authors)
    if data_dir is None and os.environ.get(DIR_ENV_VAR):
        data_dir, origin = os.environ[DIR_ENV_VAR], f"the environment variable {DIR_ENV_VAR}"
    else:
        origin = "data_dir / --data-dir"
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    if folder is not None:
        read = _folder_reader(folder, origin)
        missing = [f"{name}.json" for name in _needed_files(split, holdout) if not (folder / f"{name}.json").is_file()]
        if missing:
            raise DataError(f"TOFU folder {folder} lacks {', '.join(missing)}: copy the file(s) there from "
                                  f"the {HUB_ID} dataset" + (", or use holdout='carve'" if holdout == "file" else ""))
    else:
        read = _hub_reader()

    retain_split, n_forget_authors = SPLITS[split]
    forget = read(split)
    retain = read(retain_split)
    _check_author_rows(forget, retain, split)

    if holdout == "carve":
        n_carved = n_forget_authors * ROWS_PER_AUTHOR
        retain, holdout_rows = retain[:-n_carved], retain[-n_carved:]
    elif holdout == "file":
        holdout_rows = _read_holdout_file(read, split, from_hub=folder is None)
    else:
        holdout_rows = []

    if retain_authors is not None:
        available = len(retain) // ROWS_PER_AUTHOR
        if retain_authors > available:
            raise DataError(f"retain_authors={retain_authors} but {split} with holdout='{holdout}' leaves "
                                  f"{available} retain authors: use retain_authors <= {available}, or leave it unset")
        retain = retain[: retain_authors * ROWS_PER_AUTHOR]

    retained = {(ex.question, ex.answer) for ex in retain}
    eval_retain = [ex for ex in read("retain_perturbed") if (ex.question, ex.answer) in retained]
    return Task(
        name=_task_name(split, holdout, retain_authors),
        forget=forget,
        retain=retain,
        holdout=holdout_rows,
        eval_forget=read(f"{split}_perturbed"),
        eval_retain=eval_retain,
        real_authors=read("real_authors_perturbed"),
        world_facts=read("world_facts_perturbed"),
        idk_answers=_folder_idk(folder) if folder is not None else _hub_idk(),
    )
