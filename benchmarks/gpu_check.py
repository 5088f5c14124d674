"""GPU check (run by benchmarks/gpu_check.sh): a random-weight Llama of 7B shape in bfloat16 on one GPU.

1. Builds the model on the GPU from a config (hidden 4096, 32 layers, 32 heads, MLP 11008; the vocabulary
   is the demo tokenizer's, so every generated id decodes) and saves it, so that vLLM can load it too.
2. The hf backend: greedy responses to the sample suite's probes in batches of 16 against one at a time;
   prints how many are equal and, for the others, where they part.
3. Times the hf backend against vLLM (when installed) on the same probes and new-token budget.

    python benchmarks/gpu_check.py [--layers 32] [--new-tokens 64] [--dtype bfloat16] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(folder: Path, layers: int, dtype: str) -> float:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pytest_safeedit.demo.model import CHAT_TEMPLATE, build_tokenizer
    from tests.helpers import sample_corpus

    tokenizer = build_tokenizer(sample_corpus(), 2000)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=dtype,
    )
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: Llama, {layers} layers, hidden 4096, {params / 1e9:.2f}B parameters, {dtype}, built and saved in "
        f"{time.perf_counter() - start:.1f} s"
    )
    del model
    torch.cuda.empty_cache()
    return params


def probe_texts() -> list[str]:
    from pytest_safeedit.cases.loading import load_suite

    return [p.text for c in load_suite(ROOT / "suites" / "sample.yaml").cases for p in c.probes]


def hf_check(folder: Path, texts: list[str], new_tokens: int, dtype: str) -> tuple[list[str], float]:
    import torch

    from pytest_safeedit.backends.base import Request
    from pytest_safeedit.backends.hf import HFGenerator
    from pytest_safeedit.config.settings import GenerationSettings, ModelSettings

    generator = HFGenerator(ModelSettings(str(folder), dtype=dtype, device="cuda"))
    batched = GenerationSettings(max_new_tokens=new_tokens, batch_size=16)
    generator.generate([Request(texts[0], None, batched)])  # load and warm up
    torch.cuda.synchronize()
    start = time.perf_counter()
    together = generator.generate([Request(t, None, batched) for t in texts])
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    single = GenerationSettings(max_new_tokens=new_tokens, batch_size=1)
    subset = texts[:48]
    alone = [generator.generate([Request(t, None, single)])[0] for t in subset]
    equal = sum(a == b for a, b in zip(together, alone))
    print(f"hf backend, {dtype}: batched (16) equals one at a time for {equal}/{len(subset)} probes")
    tokenizer = generator.model.tokenizer
    for a, b in [(a, b) for a, b in zip(together, alone) if a != b][:3]:
        ta, tb = tokenizer(a)["input_ids"], tokenizer(b)["input_ids"]
        part = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        shown = tokenizer.decode(ta[:part])[-30:]
        print(
            f"  parts at new token {part} after ...{shown!r}: batched {tokenizer.decode(ta[part : part + 4])!r}, "
            f"alone {tokenizer.decode(tb[part : part + 4])!r}"
        )
    print(f"hf backend: {len(texts)} probes x {new_tokens} new tokens in {seconds:.2f} s (batch 16)")
    del generator
    torch.cuda.empty_cache()
    return together, seconds


def vllm_time(folder: Path, texts: list[str], new_tokens: int, dtype: str) -> tuple[list[str], float] | None:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        print(f"vllm: not importable ({exc}); no vLLM timing")
        return None
    from pytest_safeedit.backends.base import Request
    from pytest_safeedit.backends.vllm import VLLMGenerator
    from pytest_safeedit.config.settings import GenerationSettings, ModelSettings

    generator = VLLMGenerator(ModelSettings(str(folder), dtype=dtype, device="cuda"), gpu_memory_utilization=0.8)
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=len(texts))
    generator.generate([Request(texts[0], None, settings)])  # load and warm up
    start = time.perf_counter()
    out = generator.generate([Request(t, None, settings) for t in texts])
    seconds = time.perf_counter() - start
    print(f"vllm backend: {len(texts)} probes x {new_tokens} new tokens in {seconds:.2f} s")
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    import torch
    import transformers

    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, transformers {transformers.__version__}")
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        build(folder, args.layers, args.dtype)
        texts = probe_texts()
        hf_out, hf_s = hf_check(folder, texts, args.new_tokens, args.dtype)
        served = vllm_time(folder, texts, args.new_tokens, args.dtype)
        figures = {"probes": len(texts), "new_tokens": args.new_tokens, "dtype": args.dtype, "hf_s": round(hf_s, 3)}
        if served is not None:
            v_out, v_s = served
            same = sum(a == b for a, b in zip(hf_out, v_out))
            print(f"hf / vllm time: {hf_s / v_s:.2f}x; equal greedy responses: {same}/{len(texts)}")
            figures.update(vllm_s=round(v_s, 3), equal=same)
        if args.out:
            args.out.write_text(json.dumps(figures, indent=1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
