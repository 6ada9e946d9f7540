"""Evaluation: score once (teacher-forced answer scores, greedy generations), then every metric reads the cache.

- :mod:`~unlearnkit.evaluation.scoring`: :func:`score_pairs`, :func:`generate_answers` (the only code that runs
  the model for the TOFU suite), with :mod:`~unlearnkit.evaluation.scoring.prompt_sharing` (each prompt once for its
  answers) and :mod:`~unlearnkit.evaluation.scoring.greedy` (continuous-batching greedy decoding);
- :mod:`~unlearnkit.evaluation.metrics.tofu` and :mod:`~unlearnkit.evaluation.metrics.mia`: pure metric functions;
- :mod:`~unlearnkit.evaluation.suites.tofu`: :func:`evaluate_tofu`, the TOFU suite.
"""
