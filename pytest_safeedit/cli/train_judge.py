"""``python -m pytest_safeedit train-judge FILE... --encoder PATH_OR_ID --out DIR``: fine-tune a pretrained
encoder into a safety classifier that ``--safeedit-judge classifier:DIR`` loads.

The SafeEdit paper's own recipe (its judge is RoBERTa-large fine-tuned on hand-labelled responses), on
the user's labels: label files, the benchmark's official JSON (each record's references) and suites.
A held-out part of the examples is never trained on and is reported: whole attack templates where the
examples name them (the benchmark's test split attacks with templates its train split never shows),
otherwise whole questions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_safeedit.cli.judge_eval import agreement, group_members, judge_examples, judged_unsafe, percent
from pytest_safeedit.judges.classifier import TRAINED_JUDGE_FILE, ClassifierJudge, classifier_inputs
from pytest_safeedit.judges.labelled import GROUPS, Example, LabelsError, load_examples

#: Class indices of the written classifier.
LABELS = {0: "safe", 1: "unsafe"}


@dataclass(frozen=True)
class TrainSettings:
    """How the classifier is trained.

    Args:
        epochs: passes over the training examples.
        lr: peak learning rate (linear warm-up over the first tenth, then linear decay).
        batch_size: examples per step.
        max_length: input limit in tokens (the response's start is kept).
        with_prompt: read each response with its prompt, as a text pair.
        seed: seeds the split, the head's initial weights and the order of examples.
    """

    epochs: int = 4
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 256
    with_prompt: bool = False
    seed: int = 0


def _stable(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``text`` and ``seed``."""
    return int(hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()[:12], 16) / 16**12


def holdout_groups(examples: Sequence[Example], by: str, fraction: float, seed: int) -> list[str]:
    """Whole groups (``by``'s values) drawn in a seeded order until they hold ``fraction`` of the examples
    that have a group; the held-out share is at least one group when there are two or more."""
    sizes: dict[str, int] = {}
    for example in examples:
        if example.group(by) != "-":
            sizes[example.group(by)] = sizes.get(example.group(by), 0) + 1
    if len(sizes) < 2 or fraction <= 0:
        return []
    order = sorted(sizes, key=lambda g: _stable(g, seed))
    total = sum(sizes.values())
    target = fraction * total
    chosen: list[str] = []
    held = 0
    for group in order:
        # A group that would carry the held-out share past the target is skipped: a large group drawn
        # early must not take most of the data.
        if held + sizes[group] <= target:
            chosen.append(group)
            held += sizes[group]
        if held >= target:
            break
    if not chosen:  # every group is larger than the target: hold out the smallest
        chosen.append(min(order, key=lambda g: sizes[g]))
    return sorted(chosen)


def split_examples(
    examples: Sequence[Example], by: str, fraction: float, seed: int, groups: Sequence[str] = ()
) -> tuple[list[Example], list[Example], list[str]]:
    """Training and held-out examples, and the held-out groups. Examples of a held-out group are held out;
    examples without a group are held out by their labels' own ``holdout`` split where they have one, else
    by a seeded draw over their prompt (all responses to one prompt fall on one side)."""
    if fraction <= 0 and not groups:
        return list(examples), [], []
    chosen = sorted(groups) or holdout_groups(examples, by, fraction, seed)
    train: list[Example] = []
    held: list[Example] = []
    for example in examples:
        group = example.group(by)
        if group != "-":
            out = group in chosen
        elif example.split:
            out = example.split == "holdout"
        else:
            out = fraction > 0 and _stable(example.prompt or example.response, seed) < fraction
        (held if out else train).append(example)
    return train, held, chosen


def encoder_folder(encoder: str, cache_dir: str | None) -> str:
    """A folder or hub id ``from_pretrained`` can read: a ``.zip`` of a model folder is unpacked once into
    the cache folder (keyed by its content)."""
    path = Path(encoder).expanduser()
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return encoder
    from pytest_safeedit.util.cache import cache_root
    from pytest_safeedit.util.files import build_once

    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    target = cache_root(cache_dir) / "encoders" / key

    def unpack(folder: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(folder)
        (folder / ".unpacked").touch()

    build_once(target, ".unpacked", unpack)
    found = [p.parent for p in target.rglob("config.json")]
    if not found:
        raise ValueError(f"--encoder {encoder}: the zip holds no model folder (no config.json)")
    return str(min(found, key=lambda p: len(p.parts)))


def _progress(done: int, total: int, loss: float, started: float) -> None:
    width = 30
    filled = int(width * done / total)
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if done else 0.0
    line = f"\rtraining [{'#' * filled}{'.' * (width - filled)}] {done}/{total} steps, loss {loss:.4f}, "
    line += f"{elapsed:.0f} s, about {eta:.0f} s left"
    end = "\n" if done == total else ""
    if sys.stderr.isatty() or done == total or done % max(1, total // 10) == 0:
        print(line if sys.stderr.isatty() else line.lstrip("\r"), end=end if sys.stderr.isatty() else "\n",
              file=sys.stderr, flush=True)  # fmt: skip


def train(encoder: str, examples: Sequence[Example], settings: TrainSettings, out: Path) -> None:
    """Fine-tune ``encoder`` on ``examples`` and save the classifier, its tokenizer and its record in ``out``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pytest_safeedit.backends.hf import quiet_transformers

    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            encoder, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
        )
    model.train()
    order = list(range(len(examples)))
    steps_per_epoch = math.ceil(len(order) / settings.batch_size)
    total = max(1, steps_per_epoch * settings.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    # Classes weighted by their inverse frequency: label files are mostly safe, and a judge that learns to
    # say "safe" everywhere is the failure that matters.
    unsafe = sum(e.unsafe for e in examples)
    counts = torch.tensor([max(1, len(examples) - unsafe), max(1, unsafe)], dtype=torch.float)
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts))
    rng = random.Random(settings.seed)
    started = time.monotonic()
    step = 0
    for _ in range(settings.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            batch = [examples[i] for i in order[start : start + settings.batch_size]]
            prompts = [e.prompt for e in batch] if settings.with_prompt else None
            enc = classifier_inputs(tokenizer, [e.response for e in batch], prompts, settings.max_length)
            labels = torch.tensor([int(e.unsafe) for e in batch])
            loss = loss_fn(model(**enc).logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            _progress(step, total, loss.item(), started)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _figures(judge: ClassifierJudge, examples: Sequence[Example], by: str) -> dict[str, Any]:
    judged = judged_unsafe(judge_examples(examples, judge), examples)
    return {
        group: agreement([judged[i] for i in members], [examples[i].unsafe for i in members]).to_dict()
        for group, members in group_members(examples, (by, "source")).items()
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_safeedit train-judge",
        description="Fine-tune a pretrained encoder into a safety classifier for --safeedit-judge classifier:DIR, "
        "holding out whole attack templates (or questions) and reporting on them.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="labels (.jsonl), official SafeEdit JSON or a suite")
    parser.add_argument(
        "--encoder", required=True, metavar="PATH_OR_ID", help="a model folder, a .zip of one, or a hub id"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where the classifier is written")
    parser.add_argument(
        "--holdout-by", default="attack", choices=GROUPS, help="what a held-out group is (default: attack template)"
    )
    parser.add_argument(
        "--holdout-fraction", type=float, default=0.25, metavar="F",
        help="share of examples held out, in whole groups (default 0.25; 0 trains on everything and reports nothing)",
    )  # fmt: skip
    parser.add_argument(
        "--holdout", action="append", default=[], metavar="GROUP", help="hold out this group (repeatable; overrides the draw)"
    )  # fmt: skip
    defaults = TrainSettings()
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"default {defaults.lr}")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"default {defaults.batch_size}")
    parser.add_argument("--max-length", type=int, default=defaults.max_length, help=f"default {defaults.max_length}")
    parser.add_argument("--with-prompt", action="store_true", help="read each response with its prompt")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"default {defaults.seed}")
    parser.add_argument("--cache-dir", help="where a zipped encoder is unpacked (default: the plugin's cache)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.holdout_fraction < 1:
        print("train-judge: error: --holdout-fraction must be at least 0 and below 1", file=sys.stderr)
        return 2
    for flag, value, least in (
        ("--epochs", args.epochs, 1),
        ("--batch-size", args.batch_size, 1),
        ("--max-length", args.max_length, 8),
    ):
        if value < least:
            print(f"train-judge: error: {flag} must be at least {least}, got {value}", file=sys.stderr)
            return 2
    settings = TrainSettings(args.epochs, args.lr, args.batch_size, args.max_length, args.with_prompt, args.seed)
    try:
        examples = [e for path in args.files for e in load_examples(path)]
        encoder = encoder_folder(args.encoder, args.cache_dir)
    except (LabelsError, ValueError, OSError) as exc:
        print(f"train-judge: error: {exc}", file=sys.stderr)
        return 2
    train_set, held, groups = split_examples(examples, args.holdout_by, args.holdout_fraction, args.seed, args.holdout)
    unknown = sorted(set(args.holdout) - {e.group(args.holdout_by) for e in examples})
    if unknown:
        print(
            f"train-judge: error: --holdout {', '.join(unknown)}: no example has that {args.holdout_by}",
            file=sys.stderr,
        )
        return 2
    if not train_set or len({e.label for e in train_set}) < 2:
        print(
            "train-judge: error: the training part needs safe and unsafe examples; add labelled files", file=sys.stderr
        )
        return 2
    print(
        f"train-judge: {len(train_set)} training examples ({sum(e.unsafe for e in train_set)} unsafe), "
        f"{len(held)} held out" + (f" ({args.holdout_by}: {', '.join(groups)})" if groups else ""),
        file=sys.stderr,
    )
    out = Path(args.out)
    try:
        train(encoder, train_set, settings, out)
    except (OSError, ValueError) as exc:
        print(f"train-judge: error: cannot train from --encoder {args.encoder}: {exc}", file=sys.stderr)
        return 2
    record: dict[str, Any] = {
        "unsafe_label": 1,
        "labels": {str(k): v for k, v in LABELS.items()},
        "with_prompt": settings.with_prompt,
        "max_length": settings.max_length,
        "encoder": args.encoder,
        "settings": asdict(settings),
        "data": [
            {"file": Path(p).name, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()} for p in args.files
        ],
        "trained_on": len(train_set),
        "holdout": {"by": args.holdout_by, "groups": groups, "examples": len(held)},
    }
    (out / TRAINED_JUDGE_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    if held:
        judge = ClassifierJudge(str(out))
        figures = _figures(judge, held, args.holdout_by)
        record["holdout"]["figures"] = figures
        (out / TRAINED_JUDGE_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        a = figures["all"]
        print(
            f"held out ({len(held)} examples): accuracy {percent(a['accuracy'])}, unsafe recall {percent(a['recall'])}, "
            f"precision {percent(a['precision'])}, safe kept {percent(a['specificity'])}, kappa "
            f"{'-' if a['kappa'] is None else format(a['kappa'], '.3f')}"
        )
        for key, g in figures.items():
            if key != "all":
                print(f"  {key}: n {g['n']}, accuracy {percent(g['accuracy'])}, recall {percent(g['recall'])}, "
                      f"safe kept {percent(g['specificity'])}")  # fmt: skip
    print(f"wrote {out}: use it with --safeedit-judge classifier:{out}")
    return 0
