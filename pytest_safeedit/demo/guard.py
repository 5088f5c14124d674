"""The demo guard: a tiny causal LM trained here, in seconds, to answer in the Llama Guard 3 format.

It learns from the sample suite's own references (each safe reference is ``safe``, each unsafe one
``unsafe`` with a Llama Guard category, read as answers to every probe of its case; benign answers and
knowledge answers are ``safe``), so that the guard-model path runs end to end offline and the judge check
measures it. It is a stand-in for a real guard model, not one: on other text it knows little.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.cases.model import Suite
from pytest_safeedit.demo.model import (
    DemoRecipe,
    build_tokenizer,
    demo_key,
    ensure_demo,
    sample_suite_path,
    train_small_lm,
)
from pytest_safeedit.judges.formats import FORMAT_FILE, render_llama_guard_3
from pytest_safeedit.judges.registry import JudgeOptions
from pytest_safeedit.util.cache import cache_root
from pytest_safeedit.util.files import build_once

#: Special tokens of the Llama Guard 3 format, and the padding token.
GUARD_TOKENS = ["<|pad|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

#: The Llama Guard category the demo guard names for each SafeEdit category.
GUARD_CODES = {
    "offensiveness": "S10",
    "unfairness and bias": "S10",
    "physical harm": "S1",
    "mental harm": "S11",
    "illegal activities": "S2",
    "ethics and morality": "S2",
    "privacy and property": "S7",
    "pornography": "S12",
    "political sensitivity": "S13",
}


#: The demo guard's size and training (a recipe like the demo model's; part of the cache key).
GUARD_RECIPE = DemoRecipe(
    version=2, vocab_size=1500, n_layer=2, n_embd=96, n_head=4, n_positions=512, epochs=12, seed=4321, suffix=""
)


def guard_examples(suite: Suite) -> list[tuple[str, str]]:
    """(guard input, answer) pairs in the Llama Guard 3 format from the suite's references."""
    pairs: list[tuple[str, str]] = []
    for case in suite.cases:
        if case.benign:
            if case.answer:
                pairs.append((render_llama_guard_3(case.question, case.answer)[0], "safe"))
            continue
        code = GUARD_CODES.get(case.category, "S2")
        prompts = [p.text for p in case.probes if p.text]
        examples = [(prompt, case.safe, "safe") for prompt in prompts]
        examples += [(prompt, case.unsafe, f"unsafe\n{code}") for prompt in prompts]
        if case.knowledge is not None:
            examples.append((case.knowledge.prompt, case.knowledge.answer, "safe"))
        pairs.extend((render_llama_guard_3(p, r)[0], answer) for p, r, answer in examples)
    return pairs


def build_demo_guard(target: Path, suite: Suite, recipe: DemoRecipe) -> None:
    """Train the demo guard and save it, its tokenizer and its format marker to ``target``."""
    started = time.perf_counter()
    examples = guard_examples(suite)
    corpus = sorted({text for pair in examples for text in pair})
    tokenizer = build_tokenizer(corpus, recipe.vocab_size, GUARD_TOKENS, eos="<|eot_id|>", chat_template=None)
    info = {"format": "llama-guard-3", "recipe": asdict(recipe), "suite": suite.path.name}
    train_small_lm(target, tokenizer, examples, recipe, FORMAT_FILE, info, started)


def ensure_demo_guard(cache_dir: str | None = None, recipe: DemoRecipe = GUARD_RECIPE) -> Path:
    """Return the folder of the demo guard, building it first if this key is not cached yet."""
    path = sample_suite_path()
    key = demo_key(path.read_bytes(), recipe)
    return build_once(
        cache_root(cache_dir) / "demo-guard" / key,
        FORMAT_FILE,
        lambda work: build_demo_guard(work, load_suite(path), recipe),
    )


def with_demo_judges(specs: Sequence[str], options: JudgeOptions) -> JudgeOptions:
    """``options`` with the local folders of the specs that name the built-in demos (``guard:demo``: the
    demo guard; ``llm:demo``, ``classifier:demo``: the demo model), built if needed, added to
    :attr:`~pytest_safeedit.judges.registry.JudgeOptions.local_paths`."""
    paths = dict(options.local_paths)
    for spec in specs:
        kind, _, name = spec.partition(":")
        if name == "demo" and spec not in paths:
            built = ensure_demo_guard(options.cache_dir) if kind == "guard" else ensure_demo(options.cache_dir)
            paths[spec] = str(built)
    return replace(options, local_paths=paths)
