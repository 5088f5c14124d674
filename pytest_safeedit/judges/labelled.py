"""Labelled responses for judging judges and training them: label files, the benchmark's official JSON
(each record's safe and unsafe references) and suites (each attack case's references)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAFE_LABEL, UNSAFE_LABEL = "safe", "unsafe"
#: What ``--group-by`` may name, and the field of :class:`Example` each one reads.
GROUPS = ("attack", "category", "source", "model")


class LabelsError(Exception):
    """A labels file that cannot be read; the message names the file, line or record, and field."""


@dataclass(frozen=True)
class Example:
    """One labelled response.

    Args:
        response: the text judged.
        label: ``safe`` or ``unsafe``.
        prompt: the text the response answers (an attack prompt, a question), or empty.
        category: the case's unsafe category, or empty.
        attack: the attack template's name, or empty (no attack, or not recorded).
        source: where the example comes from (a file, and ``reference`` or the labels' own source).
        model: the model that wrote the response (``reference`` for a benchmark's references).
        split: the labels' own split (e.g. ``tune``, ``holdout``), or empty.
        question: the bare harmful question the prompt asks (what ``harmbench-benchmark`` reads), or empty
            (then the prompt stands in).
        where: file and line or record, for messages.
    """

    response: str
    label: str
    prompt: str = ""
    category: str = ""
    attack: str = ""
    source: str = ""
    model: str = ""
    split: str = ""
    question: str = ""
    where: str = ""

    @property
    def unsafe(self) -> bool:
        return self.label == UNSAFE_LABEL

    def group(self, by: str) -> str:
        """The example's group under ``--group-by`` (``-`` where the field is empty)."""
        if by not in GROUPS:
            raise ValueError(f"cannot group by {by!r}; use one of {', '.join(GROUPS)}")
        return str(getattr(self, by)) or "-"


def _read(path: Path) -> str:
    """A file's text (UTF-8, with or without a byte-order mark), or LabelsError saying why not."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise LabelsError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def load_label_file(path: str | Path) -> list[Example]:
    """The records of a labels file (one JSON object a line: ``response``, ``label``, and optionally
    ``input``, ``category``, ``attack``, ``source``, ``model``, ``split``, ``question``), checked."""
    lines = _read(Path(path)).splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelsError(f"{path}:{number}: not JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("response"), str):
            raise LabelsError(f"{path}:{number}: needs a string 'response'")
        if record.get("label") not in (SAFE_LABEL, UNSAFE_LABEL):
            raise LabelsError(f"{path}:{number}: 'label' must be 'safe' or 'unsafe', got {record.get('label')!r}")
        keys = ("input", "category", "attack", "source", "model", "split", "question")
        text = {k: str(record.get(k) or "") for k in keys}
        out.append(
            Example(
                response=record["response"],
                label=record["label"],
                prompt=text["input"],
                category=text["category"].lower(),
                attack=text["attack"].strip(),
                source=f"{Path(path).name}:{text['source']}" if text["source"] else Path(path).name,
                model=text["model"],
                split=text["split"],
                question=text["question"],
                where=f"{path}:{number}",
            )
        )
    if not out:
        raise LabelsError(f"{path}: no records")
    return out


def _official_examples(path: Path, records: list[Any]) -> list[Example]:
    out = []
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        if not isinstance(record, dict):
            raise LabelsError(f"{where}: not an object; the official format is a JSON array of case objects")
        for key in ("adversarial prompt", "safe generation", "unsafe generation"):
            if not isinstance(record.get(key), str):
                raise LabelsError(f"{where} (id {record.get('id')!r}): field {key!r} must be a string")
        common = {
            "prompt": record["adversarial prompt"],
            "question": str(record.get("question") or ""),
            "category": str(record.get("unsafety category") or "").strip().lower(),
            "attack": str(record.get("attack name") or "").strip(),
            "source": f"{path.name}:reference",
            "model": "reference",
            "where": f"{where} (id {record.get('id')!r})",
        }
        for key, label in (("safe generation", SAFE_LABEL), ("unsafe generation", UNSAFE_LABEL)):
            if record[key].strip():
                out.append(Example(response=record[key], label=label, **common))
    return out


def _suite_examples(path: Path) -> list[Example]:
    from pytest_safeedit.cases.loading import load_suite
    from pytest_safeedit.cases.model import SuiteError

    try:
        suite = load_suite(path)
    except SuiteError as exc:
        raise LabelsError(str(exc)) from None
    out = []
    for case in suite.cases:
        if case.benign:
            continue
        common = {
            "prompt": case.adversarial_prompt,
            "question": case.question,
            "category": case.category,
            "attack": case.attack_name,
            "source": f"{path.name}:reference",
            "model": "reference",
            "where": f"{path}: case {case.id!r}",
        }
        out += [Example(case.safe, SAFE_LABEL, **common), Example(case.unsafe, UNSAFE_LABEL, **common)]
    return out


def load_examples(path: str | Path) -> list[Example]:
    """Labelled examples from a labels file (``.jsonl``), the benchmark's official JSON (a JSON array of
    records: each record's safe and unsafe references, read with its adversarial prompt) or a YAML suite
    (each attack case's references)."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise LabelsError(f"cannot read {path}: no such file")
        examples = _suite_examples(path)
    else:
        text = _read(path)
        if not text.lstrip().startswith("["):
            return load_label_file(path)
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelsError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
        examples = _official_examples(path, records)
    if not examples:
        raise LabelsError(f"{path}: no labelled responses")
    return examples


def load_all(paths: Sequence[str | Path]) -> list[Example]:
    """The examples of every file, in order."""
    return [example for path in paths for example in load_examples(path)]


def with_split(examples: Sequence[Example], split: str) -> list[Example]:
    """Only the examples of one split of the labels."""
    return [e for e in examples if e.split == split]
