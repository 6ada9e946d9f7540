"""Hyper-parameter sweeps: many runs of one config, a leaderboard over seeds, the Pareto front, the best choice.

- :mod:`.plan` turns a config, its ``sweep:`` block and ``--grid`` flags into trials (a configuration × a seed),
  each with a stable name, every trial's config validated before anything runs.
- :mod:`.runner` runs the trials (in this process, or in worker processes), each into an ordinary run directory
  under ``<sweep>/runs/``; finished trials are kept and skipped, an interrupted one is resumed.
- :mod:`.search` samples configurations with Optuna instead of a grid (multi-objective, stored so it resumes).
- :mod:`.leaderboard` aggregates the trials per configuration (mean and 95% interval over seeds), finds the Pareto
  front of the objectives and picks the best configuration by a stated rule; writes markdown and HTML.
"""
