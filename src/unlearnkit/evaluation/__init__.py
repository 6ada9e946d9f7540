"""Evaluation: score once (teacher-forced answer scores, greedy generations), then every metric reads the cache.

- :mod:`~unlearnkit.evaluation.scoring`: :func:`score_pairs`, :func:`generate_answers` (the only code that runs
  the model);
- :mod:`~unlearnkit.evaluation.tofu_metrics` and :mod:`~unlearnkit.evaluation.mia`: pure metric functions;
- :mod:`~unlearnkit.evaluation.suite`: :func:`evaluate_tofu`, the TOFU suite.
"""
