"""Gradient buckets for the all-reduce (the sum itself is checked by the two-process test)."""

import torch

from unlearnkit.training import gradient_sync


def test_gradient_buckets_respect_size_and_dtype(monkeypatch):
    monkeypatch.setattr(gradient_sync, "BUCKET_ELEMENTS", 10)
    params = [torch.nn.Parameter(torch.zeros(n, dtype=dtype)) for n, dtype in
              [(4, torch.float32), (6, torch.float32), (1, torch.float32), (20, torch.float32), (2, torch.float32),
               (3, torch.bfloat16), (1, torch.float32)]]
    for p in params:
        p.grad = torch.zeros_like(p)
    sizes = [[p.numel() for p in bucket] for bucket in gradient_sync._buckets(params)]
    assert sizes == [[4, 6], [1], [20], [2], [3], [1]]
