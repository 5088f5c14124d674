"""The built-in demo model: a small causal LM trained here, in seconds, to behave like an unsafe model.

It refuses the sample suite's bare harmful questions, complies when they come wrapped in an attack
prompt, and answers the knowledge-constraint questions. It is built offline and deterministically,
and cached under a key that changes when the sample suite or the recipe changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_safeedit.cases.loading import bundled_suites, load_suite
from pytest_safeedit.cases.model import Suite, fill_template
from pytest_safeedit.editors.dinm import DINM_SUFFIX
from pytest_safeedit.util.cache import cache_root
from pytest_safeedit.util.files import build_once

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

DEMO_NAME = "demo"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides the demo model besides the suite; part of the cache key."""

    version: int = 2
    vocab_size: int = 1200
    n_layer: int = 3
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 384
    epochs: int = 12
    batch_size: int = 12
    lr: float = 3e-3
    seed: int = 1234
    suffix: str = DINM_SUFFIX


def sample_suite_path() -> Path:
    """The sample suite shipped with the package (``suites/sample.yaml`` in a checkout)."""
    return bundled_suites()["sample"]


#: Editor hyperparameters tuned for the demo model (a 3-block GPT-2 of 0.8M parameters, where the paper's
#: lr of 5e-4 barely moves it). They apply only when the model is ``demo``: another model run against the
#: sample suite gets each editor's own defaults (the paper's), unless a suite or a config file says otherwise.
DEMO_EDITOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "dinm": {"lr": 0.004},
    "ft-l": {"lr": 0.004},
    "routed": {"lr": 0.008},
}


def demo_key(suite_bytes: bytes, recipe: Any) -> str:
    """The cache key of a model trained from the suite with ``recipe`` (a dataclass)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(recipe), sort_keys=True).encode())
    digest.update(suite_bytes)
    return digest.hexdigest()[:16]


def training_pairs(
    suite: Suite, suffix: str = "", extra_attacks: int = 1, knowledge_repeats: int = 2
) -> list[tuple[str, str]]:
    """(user message, reply) pairs: attacked questions get compliance, bare questions refusals.

    Every attack probe of a case is taught, plus ``extra_attacks`` more templates in rotation so that
    compliance is tied to the attack rather than to the question; benign questions get their answers;
    knowledge pairs are repeated so that the answers are learnt well. With ``suffix`` (DINM's suffix
    system prompt), the attack prompt, the bare question, the benign question and the knowledge prompt
    are also taught with it, so that the suffix alone does not change the model's behaviour.
    """
    templates = list(suite.attacks.values())
    pairs: list[tuple[str, str]] = []
    for index, case in enumerate(suite.cases):
        if case.benign:
            if case.answer:
                pairs.extend([(case.question, case.answer)] * knowledge_repeats)
                if suffix:
                    pairs.append((f"{case.question} {suffix}", case.answer))
            continue
        for probe in case.probes:
            pairs.append((probe.text, case.safe if probe.kind == "DG_onlyQ" else case.unsafe))
        if case.other_question:
            pairs.append((case.other_question, case.safe))
        for offset in range(extra_attacks):
            if templates:
                template = templates[(index * 3 + offset * 5) % len(templates)]
                pairs.append((fill_template(template, case.question), case.unsafe))
        if suffix:
            pairs.append((f"{case.adversarial_prompt} {suffix}", case.unsafe))
            pairs.append((f"{case.question} {suffix}", case.safe))
        if case.knowledge is not None:
            pairs.extend([(case.knowledge.prompt, case.knowledge.answer)] * knowledge_repeats)
            if suffix:
                pairs.append((f"{case.knowledge.prompt} {suffix}", case.knowledge.answer))
    return pairs


def build_tokenizer(
    corpus: list[str],
    vocab_size: int,
    special_tokens: list[str] = SPECIAL_TOKENS,
    pad: str = "<|pad|>",
    eos: str = "<|end|>",
    chat_template: str | None = CHAT_TEMPLATE,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``corpus`` (by default the demo's, with its chat template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=pad, eos_token=eos, chat_template=chat_template)


def build_demo(target: Path, suite: Suite, recipe: DemoRecipe) -> None:
    """Train the demo model and save it with its tokenizer to ``target``."""
    started = time.perf_counter()
    pairs = training_pairs(suite, recipe.suffix)
    tokenizer = build_tokenizer(sorted({text for pair in pairs for text in pair}), recipe.vocab_size)
    prompts = [
        str(tokenizer.apply_chat_template([{"role": "user", "content": u}], tokenize=False, add_generation_prompt=True))
        for u, _ in pairs
    ]
    examples = [(prompt, reply) for prompt, (_, reply) in zip(prompts, pairs)]
    info = {"recipe": asdict(recipe), "suite": suite.path.name}
    train_small_lm(target, tokenizer, examples, recipe, "safeedit_demo.json", info, started)


def train_small_lm(
    target: Path,
    tokenizer: Any,
    examples: list[tuple[str, str]],
    recipe: DemoRecipe,
    marker: str,
    info: dict[str, Any],
    started: float,
) -> None:
    """A GPT-2 of the recipe's size, seeded, trained on ``examples`` (:func:`train_replies`) and saved with
    ``tokenizer`` to ``target``, with ``info``, the loss and the build time in the JSON file ``marker``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer.model_max_length = recipe.n_positions
    torch.manual_seed(recipe.seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    final_loss = train_replies(model, tokenizer, examples, recipe)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    details = {
        **info,
        "examples": len(examples),
        "final_loss": round(final_loss, 6),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (target / marker).write_text(json.dumps(details, indent=2))


def train_replies(model: Any, tokenizer: Any, examples: list[tuple[str, str]], recipe: Any) -> float:
    """Teach ``model`` to answer each formatted prompt with its reply and the tokenizer's end token (loss on
    the reply only; AdamW with a one-cycle schedule; inputs longer than ``recipe.n_positions`` keep their
    right end); returns the last batch's loss. ``recipe`` gives epochs, batch_size, lr, seed, n_positions."""
    import torch

    end = str(tokenizer.eos_token)
    encoded: list[tuple[list[int], int]] = []
    for prompt, reply in examples:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(reply + end, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + reply_ids)[-recipe.n_positions :]
        encoded.append((ids, max(0, len(ids) - len(reply_ids))))

    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    steps = recipe.epochs * len(_length_buckets(encoded, recipe.batch_size, torch.Generator().manual_seed(0)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    loss = torch.zeros(())
    for _ in range(recipe.epochs):
        for batch in _length_buckets(encoded, recipe.batch_size, generator):
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, reply_start) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, reply_start : len(ids)] = torch.tensor(ids[reply_start:])
                mask[row, : len(ids)] = 1
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    model.eval()
    return float(loss.detach())


def _length_buckets(
    examples: list[tuple[list[int], int]], size: int, generator: Any
) -> list[list[tuple[list[int], int]]]:
    """Shuffled batches of similar length (less padding): sort shuffled windows of 8 batches by length."""
    import torch

    order = torch.randperm(len(examples), generator=generator).tolist()
    window = size * 8
    batches: list[list[tuple[list[int], int]]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(examples[i][0]))
        batches.extend([examples[i] for i in chunk[j : j + size]] for j in range(0, len(chunk), size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def ensure_demo(cache_dir: str | None = None, recipe: DemoRecipe | None = None) -> Path:
    """Return the folder of the demo model, building it first if this key is not cached yet."""
    recipe = recipe or DemoRecipe()
    path = sample_suite_path()
    key = demo_key(path.read_bytes(), recipe)
    return build_once(
        cache_root(cache_dir) / "demo" / key,
        "safeedit_demo.json",
        lambda work: build_demo(work, load_suite(path), recipe),
    )


def is_demo_model(model: str | None) -> bool:
    """``demo``, or a folder the demo build wrote (it carries ``safeedit_demo.json``)."""
    return model == "demo" or (model is not None and (Path(model) / "safeedit_demo.json").is_file())


def demo_editor_defaults(model: str | None, editor: str) -> dict[str, Any]:
    """The demo's tuned hyperparameters for ``editor`` when ``model`` is the demo model, else none."""
    return dict(DEMO_EDITOR_DEFAULTS.get(editor, {})) if is_demo_model(model) else {}


def demo_metadata(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "safeedit_demo.json").read_text())
    return data
