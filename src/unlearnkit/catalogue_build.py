"""Write :mod:`unlearnkit.catalogue_data` from the registries: ``python -m unlearnkit.catalogue_build``.

Run it after adding or changing a method, an optimizer or a metric (``tests/cli/test_catalogue.py`` fails until
then). It imports every registry (and so torch); :mod:`unlearnkit.catalogue` reads the result without them.
"""

from __future__ import annotations

import pprint
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic_core import PydanticUndefined

from unlearnkit.catalogue import BOUNDS, PACKAGES, package_modules
from unlearnkit.methods.params import MethodParams
from unlearnkit.optim.params import OptimizerParams

OUTPUT = Path(__file__).with_name("catalogue_data.py")
HEADER = ('"""What the registries hold, as data (issue #20): written by ``python -m unlearnkit.catalogue_build``, '
          'read by\n:mod:`unlearnkit.catalogue`. Do not edit by hand."""\n\n')


def type_tree(annotation: Any) -> Any:
    """An annotation as plain data (``"float"``, ``{"union": ["int", None]}``, ...); anything else is refused."""
    if annotation is type(None):
        return None
    if annotation in (float, int, bool, str):
        return annotation.__name__
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return {"literal": list(args)}
    if origin in (Union, types.UnionType):
        return {"union": [type_tree(a) for a in args]}
    if origin is list and len(args) == 1:
        return {"list": type_tree(args[0])}
    if origin is Annotated:
        return {"annotated": {"type": type_tree(args[0]), "bounds": bounds(args[1:])}}
    raise TypeError(f"the catalogue cannot describe the annotation {annotation!r}: extend unlearnkit.catalogue")


def bounds(metadata) -> dict[str, Any]:
    """``{"ge": 0, ...}`` of annotated-types constraints; any other metadata is refused."""
    out = {}
    for item in metadata:
        found = [key for key in BOUNDS if isinstance(item, BOUNDS[key])]
        if not found:
            raise TypeError(f"the catalogue cannot describe the constraint {item!r}: extend unlearnkit.catalogue")
        out[found[0]] = getattr(item, found[0])
    return out


def params_spec(params: type[MethodParams], family: type[MethodParams]) -> list[dict]:
    """Each field of ``params`` as data; refused when the class words its errors other than ``family`` does."""
    for hook in ("_explain", "_unknown_message", "_label", "check"):
        if getattr(params, hook).__func__ is not getattr(family, hook).__func__:
            raise TypeError(f"{params.__qualname__} overrides {hook}: the catalogue cannot rebuild its messages")
    spec = []
    for name, field in params.model_fields.items():
        if field.default is PydanticUndefined or field.default_factory is not None or field.alias is not None:
            raise TypeError(f"{params.__qualname__}.{name}: the catalogue needs a plain default and no alias")
        spec.append({"name": name, "type": type_tree(field.annotation), "bounds": bounds(field.metadata),
                     "default": field.default, "description": field.description})
    return spec


def build() -> dict:
    """The catalogue of the registries as they are now."""
    from unlearnkit.evaluation.metrics.registry import metrics_of
    from unlearnkit.methods.registry import available as methods
    from unlearnkit.optim.registry import available as optimizers

    return {
        "modules": {kind: package_modules(kind) for kind in PACKAGES},
        "methods": {name: {"params": params_spec(cls.Params, MethodParams)} for name, cls in methods().items()},
        "optimizers": {name: {"params": params_spec(cls.Params, OptimizerParams),
                              "uses_closure": bool(getattr(cls, "uses_closure", False))}
                       for name, cls in optimizers().items()},
        "metrics": {suite: list(metrics_of(suite)) for suite in ("tofu", "muse")},
    }


def source(catalogue: dict) -> str:
    return HEADER + "CATALOGUE = " + pprint.pformat(catalogue, width=120, compact=True, sort_dicts=False) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(source(build()))
    print(f"wrote {OUTPUT}")
