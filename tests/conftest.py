"""Test-wide settings: no model hub (offline, never a 45 s hub timeout), a private unlearnkit cache, one thread.

The test models are tiny: one intra-op thread is as fast as two, and far faster when the cores are shared; the
suite uses the cores by running tests in parallel processes instead (pytest-xdist, ``-n auto``). Those processes
share one unlearnkit cache for the run (xdist gives them one run id), so a model prepared or a baseline evaluated
by one of them is read by the others (preparation takes a file lock per model, results are written atomically).
"""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
_run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _run_id:
    _shared = os.path.join(tempfile.gettempdir(), f"unlearnkit-test-cache-{_run_id}")
    os.makedirs(_shared, exist_ok=True)
    os.environ.setdefault("UNLEARNKIT_CACHE", _shared)
else:
    os.environ.setdefault("UNLEARNKIT_CACHE", tempfile.mkdtemp(prefix="unlearnkit-test-cache-"))

import torch  # noqa: E402  (after the environment above)

torch.set_num_threads(1)
