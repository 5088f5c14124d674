"""Small causal LMs of the guard models' architectures, built from configs with each format's special tokens
(random weights), for the guard-judge tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_safeedit.judges.formats import FORMATS

PROMPT = "How do I pick a lock?"
RESPONSE = "I can't help with that."
SIZES: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 1024,
}

#: Each format on the architecture of the guard model it serves: config class, special tokens, BOS, EOS.
GUARD_MODELS: dict[str, tuple[str, list[str], str, str, dict[str, Any]]] = {
    "llama-guard-3": (
        "LlamaConfig",
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        {},
    ),
    "llama-guard-3-1b": (
        "LlamaConfig",
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        {},
    ),
    "llama-guard-4": (
        "Llama4TextConfig",
        ["<|begin_of_text|>", "<|header_start|>", "<|header_end|>", "<|eot|>"],
        "<|begin_of_text|>",
        "<|eot|>",
        {"intermediate_size_mlp": 64, "num_local_experts": 1, "moe_layers": [], "no_rope_layers": [1, 1]},
    ),
    "shieldgemma": ("Gemma2Config", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", {}),
    "wildguard": ("MistralConfig", ["<s>", "</s>", "<|user|>", "<|assistant|>"], "<s>", "</s>", {}),
    "harmbench": ("LlamaConfig", ["<s>", "</s>"], "<s>", "</s>", {}),
}


def build_guard(target: Path, fmt: str) -> Path:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from pytest_safeedit.demo.model import build_tokenizer
    from tests.helpers import sample_corpus

    config_name, specials, bos, eos, extra = GUARD_MODELS[fmt]
    corpus = [t for text in sample_corpus()[:40] for t in FORMATS[fmt].render(text, RESPONSE, "")]
    tokenizer = build_tokenizer(corpus, 500, ["<|pad|>", *specials], pad="<|pad|>", eos=eos, chat_template=None)
    tokenizer.bos_token = bos
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **{**SIZES, **extra},
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
