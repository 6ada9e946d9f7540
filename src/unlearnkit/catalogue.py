"""The registered methods, optimizers and metrics by name, with their typed parameters, read without importing them.

The registries import every method and optimizer module and the metric table, and with them torch (seconds); a
misspelt method, a bad ``method.params`` value or an unknown ``eval.extra_metrics`` name should be reported before
that, in a fraction of a second (issue #20). :mod:`unlearnkit.catalogue_data` holds, as plain data, what the
registries hold: each method's and optimizer's name and ``Params`` fields (type, bounds, default, description),
which optimizers evaluate the loss through a closure, and each suite's metric names in table order. It is written
by ``python -m unlearnkit.catalogue_build`` and ``tests/cli/test_catalogue.py`` keeps it equal to the registries.

The ``Params`` models are rebuilt from that data with the same base class (:class:`MethodParams`,
:class:`OptimizerParams`), so a bad value gets the very message the registry's class gives. What the data cannot
carry is left to the full check after torch (:func:`unlearnkit.config.check_parameters`, which always runs): field
validators written as code (e.g. LUNAR's ``refusal_prompts`` being required), and whether an optimizer can train a
method. When a package's modules differ from those the catalogue was written from (a method added without
rewriting the catalogue), the catalogue answers nothing (``None``) and the full check alone decides.
"""

from __future__ import annotations

import pkgutil
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import Field, create_model

from unlearnkit.catalogue_data import CATALOGUE
from unlearnkit.methods.params import MethodParams
from unlearnkit.optim.params import OptimizerParams

PACKAGE = Path(__file__).parent
PACKAGES = {"methods": "methods", "optimizers": "optim", "metrics": "evaluation/metrics"}  # entry kind → folder
BASES = {"method": MethodParams, "optimizer": OptimizerParams}
SCALARS = {"float": float, "int": int, "bool": bool, "str": str}
BOUNDS = {"gt": annotated_types.Gt, "ge": annotated_types.Ge, "lt": annotated_types.Lt, "le": annotated_types.Le,
          "min_length": annotated_types.MinLen, "max_length": annotated_types.MaxLen}


def package_modules(kind: str) -> list[str]:
    """The module names of the package holding ``kind``'s entries, as its registry finds them (no import)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE / PACKAGES[kind])]))


@lru_cache(maxsize=None)
def current(kind: str) -> bool:
    """Whether the catalogue was written from the modules the package holds now (else it answers nothing)."""
    return CATALOGUE["modules"].get(kind) == package_modules(kind)


def method_names() -> list[str] | None:
    return sorted(CATALOGUE["methods"]) if current("methods") else None


def optimizer_names() -> list[str] | None:
    return sorted(CATALOGUE["optimizers"]) if current("optimizers") else None


def metric_names(suite: str) -> list[str] | None:
    """The metric table's names of ``suite`` (``tofu``, ``muse``), in the table's order."""
    return list(CATALOGUE["metrics"][suite]) if current("metrics") else None


def uses_closure(optimizer: str) -> bool | None:
    if not current("optimizers") or optimizer not in CATALOGUE["optimizers"]:
        return None
    return CATALOGUE["optimizers"][optimizer]["uses_closure"]


def method_params(name: str) -> type[MethodParams] | None:
    if not current("methods") or name not in CATALOGUE["methods"]:
        return None
    return _params(f"method:{name}")


def optimizer_params(name: str) -> type[OptimizerParams] | None:
    if not current("optimizers") or name not in CATALOGUE["optimizers"]:
        return None
    return _params(f"optimizer:{name}")


@lru_cache(maxsize=None)
def _params(key: str) -> type[MethodParams]:
    kind, name = key.split(":", 1)
    spec = CATALOGUE["methods" if kind == "method" else "optimizers"][name]["params"]
    fields = {field["name"]: _field(field) for field in spec}
    return create_model(f"{name}.Params", __base__=BASES[kind], **fields)


def _field(field: dict) -> tuple[Any, Any]:
    annotation = type_of(field["type"])
    bounds = [BOUNDS[key](value) for key, value in field["bounds"].items()]
    if bounds:
        annotation = Annotated[(annotation, *bounds)]
    return annotation, Field(field["default"], description=field["description"])


def type_of(tree: Any) -> Any:
    """The annotation a type tree of :func:`unlearnkit.catalogue_build.type_tree` stands for."""
    if tree is None:
        return type(None)
    if isinstance(tree, str):
        return SCALARS[tree]
    (form, value), = tree.items()
    if form == "literal":
        return Literal[tuple(value)]
    if form == "union":  # X | None and Optional[X] alike: both read "X or null" in the messages
        return Union[tuple(type_of(v) for v in value)]
    if form == "list":
        return list[type_of(value)]
    if form == "annotated":
        return Annotated[(type_of(value["type"]), *[BOUNDS[k](v) for k, v in value["bounds"].items()])]
    raise ValueError(f"unknown type form {form!r} in the catalogue")

