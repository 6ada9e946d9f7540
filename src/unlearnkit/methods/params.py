"""Typed method hyper-parameters: each method declares a ``Params`` model (type, default, range, meaning per field).

A method's ``Params`` subclasses :class:`MethodParams` (unknown names are errors). It is checked where the user's
values come in (the run config at load, ``get_method`` in the API), so that ``beta: 0`` is a one-line error naming
the parameter, its type and its range before anything runs, not a failure at the first training step. The same
descriptions feed ``unlearnkit methods NAME``.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from unlearnkit.errors import ConfigError

_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
_PROBLEMS = {  # pydantic error type -> what the value must be, for the common cases
    "float_type": "must be a number", "float_parsing": "must be a number",
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "list_type": "must be a list",
}



class MethodParams(BaseModel):
    """The hyper-parameters of a method. Each field has a type, a default, a range and a ``description``."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def check(cls, values: dict[str, Any], method: str, where: str | None = None) -> "MethodParams":
        """``values`` validated; a bad one is an :class:`UnlearnkitError` naming the parameter, its type and range.

        ``where`` (e.g. the config file) prefixes the message and names the value as ``method.params.NAME``.
        """
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(cls._explain(exc, method, where)) from None

    @classmethod
    def _explain(cls, exc: ValidationError, method: str, where: str | None) -> str:
        errors = exc.errors()
        unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
        if unknown:
            valid = f"its parameters are {', '.join(cls.model_fields)}" if cls.model_fields else "it has none"
            names = ", ".join(map(repr, unknown))
            return f"{where + ': ' if where else ''}{cls._unknown_message(method, names, valid)}"
        err = errors[0]
        name = str(err["loc"][0])
        field = cls.model_fields[name]
        if err["type"] == "literal_error":
            problem = f"must be {type_text(field)}"
        elif err["type"] in _PROBLEMS:
            problem = _PROBLEMS[err["type"]]
        elif err["type"] == "too_short":
            problem = f"must have at least {err['ctx']['min_length']} item(s)"
        else:
            problem = bound_problem(err) or err["msg"].replace("Value error, ", "").replace("Input should be",
                                                                                             "must be")
        return f"{cls._label(method, name, where)}: {problem}, got {show(err.get('input'))} ({describe(name, field)})"

    @classmethod
    def _unknown_message(cls, method: str, names: str, valid: str) -> str:
        return f"method {method!r} has no parameter {names}: {valid} (see `unlearnkit methods {method}`)"

    @classmethod
    def _label(cls, method: str, name: str, where: str | None) -> str:
        return f"{where}: method.params.{name}" if where else f"method {method!r} parameter {name}"


def bound_problem(err: dict) -> str | None:
    """``must be > 0`` for a pydantic bound error (greater_than, ...), else None."""
    ctx = err.get("ctx") or {}
    for key, symbol in _BOUNDS:
        if key in ctx:
            return f"must be {symbol} {_number(ctx[key])}"
    return None


def show(value: Any) -> str:
    """A value as the user writes it in YAML: null, 'nll', 0.1, [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _number(value: Any) -> str:
    """A bound as written: ``0`` rather than ``0.0``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else show(value)


def _alternatives(annotation: Any) -> list[str]:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return ["null"]
    if origin is Literal:
        return [show(a) for a in args]
    if origin in (Union, types.UnionType):
        return [alt for arg in args for alt in _alternatives(arg)]
    if origin is list:
        return [f"list of {' or '.join(_alternatives(args[0]))}"]
    if origin is Annotated:
        bound = range_text(args[1:])
        return [f"{alt} {bound}".strip() for alt in _alternatives(args[0])]
    return [getattr(annotation, "__name__", str(annotation))]


def type_text(field: FieldInfo) -> str:
    """``float``, ``int or null``, ``'nll', 'kl' or null``, ``list of int >= 0 or null``."""
    alternatives = _alternatives(field.annotation)
    return alternatives[0] if len(alternatives) == 1 else f"{', '.join(alternatives[:-1])} or {alternatives[-1]}"


def range_text(metadata: Any) -> str:
    """``> 0``, ``>= 0, <= 1``, ``at least 1 item``: the bounds in a field's metadata ('' when unbounded)."""
    parts = []
    for item in metadata:
        for key, symbol in _BOUNDS:
            if getattr(item, key, None) is not None:
                parts.append(f"{symbol} {_number(getattr(item, key))}")
        if getattr(item, "min_length", None):
            parts.append(f"at least {item.min_length} item{'s' if item.min_length > 1 else ''}")
    return ", ".join(parts)


def describe(name: str, field: FieldInfo) -> str:
    """One line: ``beta: float, > 0, default 0.1: inverse temperature ...``."""
    bound = range_text(field.metadata)
    kind = f"{type_text(field)}, {bound}" if bound else type_text(field)
    return f"{name}: {kind}, default {show(field.default)}: {field.description}"


def rows(params: type[MethodParams]) -> list[tuple[str, str, str, str, str]]:
    """``(name, type, default, range, meaning)`` for each parameter, for ``unlearnkit methods NAME``."""
    return [(name, type_text(f), show(f.default), range_text(f.metadata) or "—", f.description or "")
            for name, f in params.model_fields.items()]
