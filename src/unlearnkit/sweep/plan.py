"""What a sweep runs: the ``sweep:`` block, ``--grid`` flags, and the trials (a configuration × a seed).

A config file may carry a ``sweep:`` block beside the run sections (``unlearnkit sweep`` reads it; the rest of the
file is an ordinary run config)::

    sweep:
      grid: {method.params.beta: [0.05, 0.1, 0.2], train.learning_rate: [1e-5, 3e-5]}
      seeds: 3                 # or a list of seeds
      workers: 1               # worker processes (1: run in this process)
      backend: local           # or ray (trials as Ray tasks; ray_address: auto joins a running cluster)
      objectives: [forget_quality, model_utility]
      utility_floor: 0.9       # the rule that picks the best configuration (see leaderboard.py)
      search: grid             # or optuna (then trials: N, and space: ranges besides the grid's choices)

``--grid KEY=V1,V2`` flags add to (or replace) the block's grid. A configuration is one choice of value for every
grid key; its identity is a hash of those choices, so a trial's run directory (``runs/c<hash>-seed<k>``) is the
same whenever the same sweep is run again: that is how an interrupted sweep resumes.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from unlearnkit.errors import UnlearnkitError


class Range(BaseModel):
    """An Optuna search range: floats (``log: true`` for a log scale) or integers (``int: true``)."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    log: bool = False
    int: bool = False


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted config key -> values to try")
    seeds: int | list[int] = Field(1, description="a count (seeds 0..n-1 added to the config's seed) or a list")
    workers: int = Field(1, ge=1, description="worker processes; 1 runs the trials one after another here")
    backend: Literal["local", "ray"] = Field("local", description="local: a process pool on this machine; ray: "
                                             "trials as Ray tasks (pip install 'unlearnkit[ray]')")
    ray_address: str | None = Field(None, description="ray: the cluster to join ('auto', 'ray://host:10001'); "
                                    "none starts a local Ray instance with `workers` CPUs")
    objectives: list[str] = Field(["forget_quality", "model_utility"], min_length=2, max_length=2,
                                  description="the two metrics of the Pareto front, the first the one to push")
    utility_floor: float = Field(0.9, gt=0, le=1, description="best = the Pareto configuration with the best first "
                                 "objective whose second objective is within this fraction of the target model's")
    search: Literal["grid", "optuna"] = "grid"
    trials: int | None = Field(None, ge=1, description="optuna: how many configurations to sample")
    space: dict[str, Range] = Field(default_factory=dict, description="optuna: ranges (the grid's lists are choices)")
    sampler_seed: int = Field(0, description="optuna: the sampler's seed")

    @field_validator("grid")
    @classmethod
    def _non_empty_lists(cls, grid: dict) -> dict:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values: give at least one")
        return grid

    def seed_offsets(self) -> list[int]:
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise UnlearnkitError(f"sweep.seeds: {self.seeds} seeds: give at least 1")
            return list(range(self.seeds))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UnlearnkitError(f"sweep.seeds: {self.seeds}: give distinct seeds")
        return list(self.seeds)


def _number_if_numeric(value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string: read such values as the number they are."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_grid_flag(flag: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2`` (each value read as YAML: numbers, true/false, null) or ``KEY=[V1, V2]`` (a YAML list)."""
    if "=" not in flag:
        raise UnlearnkitError(f"--grid {flag!r} is not KEY=V1,V2: write e.g. --grid method.params.beta=0.05,0.1")
    key, text = (part.strip() for part in flag.split("=", 1))
    try:
        values = yaml.safe_load(text) if text.startswith("[") else [yaml.safe_load(v) for v in text.split(",")]
        values = [_number_if_numeric(v) for v in values] if isinstance(values, list) else values
    except yaml.YAMLError:
        raise UnlearnkitError(f"--grid {flag!r}: the values are not readable: write e.g. KEY=1e-5,3e-5") from None
    if not key or not isinstance(values, list) or not values or any(v is None for v in values):
        raise UnlearnkitError(f"--grid {flag!r}: give a key and at least one value, e.g. --grid train.epochs=1,2")
    return key, values


def sweep_settings(block: dict | None, grid_flags: list[str] | None = None, **flags: Any) -> SweepConfig:
    """The ``sweep:`` block with the command line's ``--grid`` flags and options (not None) on top."""
    data = dict(block or {})
    grid = dict(data.get("grid") or {})
    for flag in grid_flags or []:
        key, values = parse_grid_flag(flag)
        grid[key] = values
    data["grid"] = grid
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        settings = SweepConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UnlearnkitError(f"sweep.{where}: {err['msg']} (got {err.get('input')!r})") from None
    if settings.search == "optuna" and settings.trials is None:
        raise UnlearnkitError("sweep.search is optuna but sweep.trials is not set: give --trials N")
    if settings.search == "grid" and settings.space:
        raise UnlearnkitError("sweep.space gives ranges, which only an optuna search samples: set --search optuna, "
                              "or list values under sweep.grid")
    return settings


def config_id(overrides: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:10]


def label(overrides: dict[str, Any]) -> str:
    """``beta=0.05 learning_rate=1e-05``: each key's last part and its value (the base config when empty)."""
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in overrides.items()) or "base config"


@dataclass
class Trial:
    """One run of the sweep: a configuration (``overrides`` of the base config) with one seed."""

    overrides: dict[str, Any]
    seed: int
    data: dict = field(repr=False, default_factory=dict)  # the whole run config, as YAML data

    @property
    def config_id(self) -> str:
        return config_id(self.overrides)

    @property
    def name(self) -> str:
        return f"c{self.config_id}-seed{self.seed}"


def grid_configurations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order the keys and values are given."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def make_trials(base: dict, configurations: list[dict[str, Any]], settings: SweepConfig) -> list[Trial]:
    """Each configuration × each seed, its run config checked now (a bad value stops the sweep before any run)."""
    from unlearnkit.config import parse_config, set_dotted

    base_seed = int(base.get("seed", 0) or 0)
    trials = []
    for overrides in configurations:
        for offset in settings.seed_offsets():
            data = copy.deepcopy(base)
            for key, value in overrides.items():
                set_dotted(data, key, value)
            seed = base_seed + offset if isinstance(settings.seeds, int) else offset
            data["seed"] = seed
            trial = Trial(overrides, seed, data)
            parse_config(data, where=f"sweep configuration {label(overrides)!r}")
            trials.append(trial)
    return trials


def sweep_identity(base: dict, settings: SweepConfig) -> str:
    """What makes two invocations the same sweep (the trial count of an optuna search may grow)."""
    fixed = settings.model_dump(exclude={"workers", "trials", "backend", "ray_address"})
    return hashlib.sha256(json.dumps({"base": base, "sweep": fixed}, sort_keys=True, default=str).encode()).hexdigest()
