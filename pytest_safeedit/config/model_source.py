"""Checking that a model can be found before anything loads it: a local folder's files, or a hub id in
the local Hugging Face cache. File checks only: nothing heavy is imported."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pytest_safeedit.config.settings import is_gguf

#: Weight files ``from_pretrained`` reads (single files, shards and their indexes).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack", "*.safetensors.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelSourceError(Exception):
    """A model that cannot be found, with what was tried and how to fix it."""


def looks_like_hub_id(name: str) -> bool:
    """``gpt2`` and ``org/model`` are hub ids unless such a folder exists; paths are everything else."""
    if is_gguf(name):
        return False
    return _HUB_ID.match(name) is not None and not Path(name).exists()


def check_model_source(name: str, *, what: str = "--safeedit-model") -> None:
    """Raise :class:`ModelSourceError` when ``name`` names no model that could load here."""
    if name == "demo":
        return
    if looks_like_hub_id(name):
        _check_hub_id(name, what)
        return
    folder = Path(name).expanduser()
    shown = f"{what} {name!r}"
    if not folder.exists():
        raise ModelSourceError(
            f"{shown}: the local folder {str(folder.absolute())!r} does not exist; check the path (relative "
            "paths start from the folder pytest runs in), or give a hub id such as 'org/model'"
        )
    if folder.is_file() and is_gguf(name):
        _check_gguf(folder, shown)
        return
    if not folder.is_dir():
        raise ModelSourceError(
            f"{shown} is a file; give the model's folder (the one save_pretrained wrote, with config.json, "
            "the weights and the tokenizer files), or a .gguf file"
        )
    if not (folder / "config.json").is_file():
        raise ModelSourceError(
            f"{shown}: the folder has no config.json, so it is not a saved model; give the folder that "
            "save_pretrained wrote (config.json, the weights, the tokenizer files)"
        )
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise ModelSourceError(
            f"{shown}: the folder has a config.json but no weights (*.safetensors or pytorch_model*.bin); "
            "copy the weight files into it, or save the model again with save_pretrained"
        )


def _check_hub_id(name: str, what: str) -> None:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if not offline:
        return  # it may download; transformers says why if it cannot
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    raise ModelSourceError(
        f"{what} {name!r}: no folder of that name exists here, and as a Hugging Face hub id it is not in the "
        f"local cache ({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE is set; download it first on a "
        f"machine with network (huggingface-cli download {name}) or pass a local folder"
    )


def _check_gguf(path: Path, shown: str) -> None:
    """A GGUF file must start with the GGUF magic; whether transformers knows its architecture and
    quantization is found out when it loads (the first probe says so)."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelSourceError(f"{shown}: cannot read the GGUF file ({exc.strerror})") from None
    if magic != b"GGUF":
        raise ModelSourceError(
            f"{shown}: the file ends in .gguf but is not a GGUF file (it does not start with 'GGUF'); "
            "check that the download is complete"
        )
