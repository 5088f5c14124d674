"""Model options from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import STRICT


def test_model_flags_from_command_line(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    from tests.helpers import MINI_SUITE

    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    args = [
        "--safeedit-model",
        str(tiny_llama_dir),
        STRICT,
        "--safeedit-max-new-tokens",
        "3",
        "--safeedit-report",
        "r.json",
    ]
    result = pytester.runpytest(
        *args,
        "--safeedit-dtype",
        "bfloat16",
        "--safeedit-device",
        "cpu",
        "--safeedit-chat-template",
        "off",
        "--safeedit-batch-size",
        "3",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    import json

    meta = json.loads((pytester.path / "r.json").read_text())["metadata"]["model"]
    assert meta["dtype"] == "bfloat16" and meta["device"] == "cpu" and meta["chat_template"] is False
    assert meta["model_class"] == "LlamaForCausalLM"
