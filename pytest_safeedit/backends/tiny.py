"""Tiny random-weight causal LMs built from a config, offline: for tests, benchmarks and trying the plugin
on an architecture without downloading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Architectures the editors are tested on: config class, its MLP output projection, config overrides.
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", "mlp.c_proj", {"n_embd": 32, "n_layer": 3, "n_head": 2, "n_positions": 256}),
    "llama": ("LlamaConfig", "mlp.down_proj", {}),
    "mistral": ("MistralConfig", "mlp.down_proj", {}),
    "qwen2": ("Qwen2Config", "mlp.down_proj", {}),
    "gemma": ("GemmaConfig", "mlp.down_proj", {"head_dim": 8}),
    "gpt_neox": ("GPTNeoXConfig", "mlp.dense_4h_to_h", {}),
    "opt": ("OPTConfig", "fc2", {"ffn_dim": 64, "word_embed_proj_dim": 32}),
    "phi": ("PhiConfig", "mlp.fc2", {}),
}
#: Sizes of the decoder-style configs (all but GPT-2, which names them its own way).
DECODER_SIZES: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}
#: Config keys some architectures do not take.
_UNUSED = {
    "gpt_neox": ("num_key_value_heads",),
    "phi": ("num_key_value_heads",),
    "opt": ("num_key_value_heads", "intermediate_size"),
}


def build_tiny_model(target: Path, kind: str, tokenizer: Any, *, seed: int = 0, **overrides: Any) -> Path:
    """Save a randomly initialised model of architecture ``kind`` (see :data:`ARCHITECTURES`) with
    ``tokenizer`` into ``target``; ``overrides`` change the config (e.g. ``n_layer=12`` for GPT-2)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    config_name, _, extra = ARCHITECTURES[kind]
    sizes = {} if kind == "gpt2" else {k: v for k, v in DECODER_SIZES.items() if k not in _UNUSED.get(kind, ())}
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        **{**sizes, **extra, **overrides},
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
