"""Typed optimizer hyper-parameters, in a module that imports no torch: the run config's optimizer parameters are
checked from the static catalogue (:mod:`unlearnkit.catalogue`) before the heavy stack is imported (issue #20)."""

from __future__ import annotations

from unlearnkit.methods.params import MethodParams


class OptimizerParams(MethodParams):
    """The hyper-parameters of an optimizer beyond ``learning_rate`` and ``weight_decay`` (which come from ``train:``).

    Same typing as method parameters (type, default, range, ``description`` per field); the error messages name the
    optimizer and point to ``unlearnkit optimizers NAME``.
    """

    @classmethod
    def _unknown_message(cls, optimizer: str, names: str, valid: str) -> str:
        return (f"optimizer {optimizer!r} has no parameter {names}: {valid} (learning_rate and weight_decay are set "
                f"in train:; see `unlearnkit optimizers {optimizer}`)")

    @classmethod
    def _label(cls, optimizer: str, name: str, where: str | None) -> str:
        return f"{where + ': ' if where else ''}optimizer {optimizer!r} parameter {name}"
