"""GGUF files converted once to an ordinary model folder, so that later runs load in a second.

transformers reads a ``.gguf`` file by parsing its metadata in Python three times (tokenizer, config,
weights) and dequantizing every tensor: about 20 s for SmolLM2-135M on two cores, paid by every run. The
first load of a file writes what it gave (tokenizer, config, generation config, the dequantized weights
in the run's dtype as safetensors) into the cache folder, keyed by the file's content, the dtype and the
library versions; later loads read that folder. The responses are the same (tested): it holds exactly
what loading the file gives. A conversion is written into a temporary folder that a failure removes, and
that the next conversion removes where the process converting was killed
(:func:`pytest_safeedit.util.files.build_once`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_safeedit.config.settings import GGUF_CACHE_MODES
from pytest_safeedit.util.files import atomic_write, build_once

#: ``--safeedit-gguf-cache auto`` converts files up to this size (the folder holds the weights
#: dequantized: about 7x a 4-bit file in float32).
AUTO_LIMIT_BYTES = 1 << 30
MARKER = "safeedit_gguf.json"


@contextmanager
def saved_as_plain(model: Any) -> Iterator[None]:
    """Inside, a model loaded from a GGUF file is no longer marked quantized (save_pretrained refuses such a
    model): its weights are plain tensors of the load's dtype by then, so it saves as the ordinary model it
    is. Other models are left as they are."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or type(quantizer).__name__ != "GgufHfQuantizer":
        yield
        return
    config = model.config
    had = hasattr(config, "quantization_config")
    kept = getattr(config, "quantization_config", None)
    model.hf_quantizer = None
    if had:
        del config.quantization_config
    try:
        yield
    finally:
        model.hf_quantizer = quantizer
        if had:
            config.quantization_config = kept


def wanted(path: Path, mode: str) -> bool:
    """Whether a GGUF file is converted under ``mode`` (auto: files up to :data:`AUTO_LIMIT_BYTES`)."""
    if mode not in GGUF_CACHE_MODES:
        raise ValueError(f"--safeedit-gguf-cache must be one of {', '.join(GGUF_CACHE_MODES)}, not {mode!r}")
    return mode == "on" or (mode == "auto" and path.stat().st_size <= AUTO_LIMIT_BYTES)


def converted_folder(path: Path, dtype: str, root: Path, memo_file: Path | None = None) -> Path:
    """The folder holding ``path`` (a GGUF file) loaded to ``dtype``, converted now unless already there."""
    import gguf
    import transformers

    from pytest_safeedit.util.cache import digest, file_digest

    content = file_digest(path, memo_file)
    about = {
        "source": str(path.resolve()),
        "sha256": content,
        "dtype": dtype,
        "transformers": transformers.__version__,
        "gguf": getattr(gguf, "__version__", "unknown"),
    }
    key = digest(about["sha256"], dtype, about["transformers"], about["gguf"])[:24]
    return build_once(root / "gguf" / key, MARKER, lambda work: _convert(path, dtype, work, about))


def _convert(path: Path, dtype: str, work: Path, about: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.resolve().parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    tokenizer.save_pretrained(work)
    with saved_as_plain(model):
        model.save_pretrained(work)
    atomic_write(work / MARKER, json.dumps(about, indent=1))
