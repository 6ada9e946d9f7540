"""Test-wide settings: no model hub (offline, never a 45 s hub timeout) and a private unlearnkit cache."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("UNLEARNKIT_CACHE", tempfile.mkdtemp(prefix="unlearnkit-test-cache-"))
