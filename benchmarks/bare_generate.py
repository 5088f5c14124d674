"""Baseline for the overhead benchmark: a bare batched ``generate`` loop over the same probes.

Usage: python benchmarks/bare_generate.py MODEL SUITE MAX_NEW_TOKENS BATCH_SIZE [-k SUBSTRING] [--sorted]

``--sorted``: the prompts are sorted by length (in tokens) before they are cut into batches, as a
careful plain loop does for prompts of very different lengths.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pytest_safeedit.cases.loading import load_suite


def main() -> None:
    model_path, suite_path, max_new, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    select = sys.argv[6] if len(sys.argv) > 6 and sys.argv[5] == "-k" else ""
    by_length = "--sorted" in sys.argv[5:]
    texts = [p.text for c in load_suite(suite_path).cases if select in c.id for p in c.probes]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    if tokenizer.chat_template:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts
        ]
    if by_length:
        texts.sort(key=lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]))
    responses = []
    for start in range(0, len(texts), batch):
        enc = tokenizer(texts[start : start + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id)
        responses += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    print(len(responses), "responses")


if __name__ == "__main__":
    main()
