"""What every bilevel solver has: a name, typed parameters, a citation, a hypergradient and a step."""

from __future__ import annotations

from typing import Any, ClassVar

from unlearnkit.optim.bilevel.params import SolverParams
from unlearnkit.optim.bilevel.problem import BilevelProblem, Tensors


class BilevelSolver:
    """A solver of ``min_x f(x, y*(x))``, ``y*(x) = argmin_y g(x, y)`` (:class:`BilevelProblem`).

    ``hypergradient(problem)`` does the solver's lower-level work (it may move y) and returns its estimate of
    grad Phi(x) without moving x; ``step(problem)`` is one upper iteration (x, and y where the solver moves it) and
    returns logs. The solver's own counters (iteration, momentum) live on the instance.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    citation: ClassVar[str]
    Params: ClassVar[type[SolverParams]]

    def __init__(self, **values: Any):
        self.params = self.Params.check(values, self.name)
        for key, value in self.params.model_dump().items():
            setattr(self, key, value)
        self.iteration = 0

    def state_dict(self) -> dict:
        """What a resumed run needs besides x and y (the iteration count; subclasses add their buffers)."""
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])

    def hypergradient(self, problem: BilevelProblem) -> Tensors:
        raise NotImplementedError

    def step(self, problem: BilevelProblem) -> dict[str, float]:
        raise NotImplementedError
