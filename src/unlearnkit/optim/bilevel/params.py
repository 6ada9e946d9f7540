"""The typed parameters of a bilevel solver: the same typing and one-line errors as a method's parameters."""

from __future__ import annotations

from unlearnkit.methods.params import MethodParams


class SolverParams(MethodParams):
    """A solver's hyper-parameters: a type, a default, a range and a ``description`` per field."""

    @classmethod
    def _unknown_message(cls, solver: str, names: str, valid: str) -> str:
        return f"bilevel solver {solver!r} has no parameter {names}: {valid}"

    @classmethod
    def _label(cls, solver: str, name: str, where: str | None) -> str:
        return f"{where + ': ' if where else ''}bilevel solver {solver!r} parameter {name}"
