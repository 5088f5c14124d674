"""The vllm backend with a stand-in for the vllm package (vLLM needs a GPU): what it asks vLLM for."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.backends.base import Request
from pytest_safeedit.backends.vllm import VLLMGenerator
from pytest_safeedit.config.settings import GenerationSettings, ModelSettings


class FakeLLM:
    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        FakeLLM.made.append(kwargs)
        self.calls: list[tuple[str, Any, Any]] = []

    def _answer(self, items: list[Any]) -> list[Any]:
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"reply {i}")]) for i in range(len(items))]

    def chat(self, conversations: list[Any], params: list[Any], use_tqdm: bool = True) -> list[Any]:
        self.calls.append(("chat", conversations, params))
        return self._answer(conversations)

    def generate(self, prompts: list[str], params: list[Any], use_tqdm: bool = True) -> list[Any]:
        self.calls.append(("generate", prompts, params))
        return self._answer(prompts)


class FakeSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.made = []
    return module


def test_chat_requests_with_greedy_and_sampled_params(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    settings = ModelSettings(str(tmp_path), dtype="bfloat16", device="cuda", seed=4)
    generator = VLLMGenerator(settings, tensor_parallel_size=2, gpu_memory_utilization=0.7)
    greedy = GenerationSettings(max_new_tokens=9, max_input_tokens=100)
    out = generator.generate([Request("hi", None, greedy), Request("q", "Be safe.", greedy)])
    assert out == ["reply 0", "reply 1"]
    made = FakeLLM.made[0]
    assert (made["model"], made["dtype"], made["seed"]) == (str(tmp_path), "bfloat16", 4)
    assert (made["tensor_parallel_size"], made["gpu_memory_utilization"]) == (2, 0.7)
    kind, conversations, params = generator.llm.calls[0]
    assert kind == "chat"
    assert conversations[1] == [{"role": "system", "content": "Be safe."}, {"role": "user", "content": "q"}]
    assert params[0].kwargs == {"max_tokens": 9, "truncate_prompt_tokens": 100, "temperature": 0.0}
    sampled = GenerationSettings(max_new_tokens=5, decoding="sample", samples=2, temperature=0.8, top_p=0.9)
    generator.generate([Request("q", None, sampled, sample=0), Request("q", None, sampled, sample=1)])
    first, second = (p.kwargs for p in generator.llm.calls[1][2])
    assert (first["temperature"], first["top_p"]) == (0.8, 0.9) and second["seed"] == first["seed"] + 1


def test_without_a_chat_template_prompts_are_plain_text(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    generator = VLLMGenerator(ModelSettings(str(tmp_path), chat_template="off"))
    generator.generate([Request("hi", "Sys.", GenerationSettings())])
    kind, prompts, _ = generator.llm.calls[0]
    assert (kind, prompts) == ("generate", ["Sys.\n\nhi"])


def test_identity_is_the_folder_content(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    one = VLLMGenerator(ModelSettings(str(tmp_path), dtype="bfloat16")).identity()
    (tmp_path / "config.json").write_text('{"changed": 1}')
    assert VLLMGenerator(ModelSettings(str(tmp_path), dtype="bfloat16")).identity() != one


def test_missing_package_and_editing_are_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    generator = VLLMGenerator(ModelSettings(str(tmp_path)))
    with pytest.raises(RuntimeError, match=r"pip install 'pytest-safeedit\[vllm\]'"):
        generator.generate([Request("hi", None, GenerationSettings())])
    with pytest.raises(RuntimeError, match="--safeedit-backend hf"):
        generator.editable(GenerationSettings())


def test_the_engine_builds_the_vllm_backend_from_the_options(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    from pytest_safeedit.config.settings import RunSettings
    from pytest_safeedit.run.engine import Engine

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")  # the folder check wants weights; vLLM is a stand-in here
    run = RunSettings(
        model=str(tmp_path), backend="vllm", tensor_parallel_size=4, gpu_memory_utilization=0.5, device="cuda",
        dtype="bfloat16", no_cache=True,
    )  # fmt: skip
    generator = Engine(run).generator
    assert isinstance(generator, VLLMGenerator)
    assert (generator.tensor_parallel_size, generator.gpu_memory_utilization) == (4, 0.5)
    assert generator.settings.dtype == "bfloat16" and generator.settings.device == "cuda"


def test_prefix_caching_is_on_and_prompts_sharing_a_template_go_together(
    fake_vllm: types.ModuleType, tmp_path: Path
) -> None:
    generator = VLLMGenerator(ModelSettings(str(tmp_path)))
    texts = ["ATTACK B: q1", "bare q", "ATTACK A: q2", "ATTACK B: q2", "ATTACK A: q1"]
    out = generator.generate([Request(t, None, GenerationSettings()) for t in texts])
    assert FakeLLM.made[0]["enable_prefix_caching"] is True
    _, conversations, _ = generator.llm.calls[0]
    sent = [c[-1]["content"] for c in conversations]
    assert sent == ["ATTACK A: q1", "ATTACK A: q2", "ATTACK B: q1", "ATTACK B: q2", "bare q"]
    assert out == [f"reply {sent.index(t)}" for t in texts]  # each answer back with its request
