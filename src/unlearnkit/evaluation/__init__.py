"""Evaluation: score once (teacher-forced answer scores, greedy generations), then every metric reads the cache.

- :mod:`~unlearnkit.evaluation.scoring`: :func:`score_pairs`, :func:`generate_answers` (the only code that runs
  the model for the TOFU suite), with :mod:`~unlearnkit.evaluation.prompt_sharing` (each prompt once for its
  answers) and :mod:`~unlearnkit.evaluation.greedy` (continuous-batching greedy decoding);
- :mod:`~unlearnkit.evaluation.tofu_metrics` and :mod:`~unlearnkit.evaluation.mia`: pure metric functions;
- :mod:`~unlearnkit.evaluation.suite`: :func:`evaluate_tofu`, the TOFU suite.
"""
