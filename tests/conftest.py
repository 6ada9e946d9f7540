"""Test-wide settings: no model hub (offline, never a 45 s hub timeout), a private unlearnkit cache, one thread.

The test models are tiny: one intra-op thread is as fast as two, and far faster when the cores are shared.
"""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("UNLEARNKIT_CACHE", tempfile.mkdtemp(prefix="unlearnkit-test-cache-"))

import torch  # noqa: E402  (after the environment above)

torch.set_num_threads(1)
