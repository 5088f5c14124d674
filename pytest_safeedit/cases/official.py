"""Loading of the SafeEdit benchmark's official JSON files, unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pytest_safeedit.cases.categories import CATEGORIES
from pytest_safeedit.cases.model import (
    Case,
    Knowledge,
    Suite,
    SuiteError,
    check_id,
    check_unique_ids,
    probes_of,
    resolve_category,
)

#: Official keys of the ``generalization test`` object, by probe.
GENERALIZATION_KEYS = {
    "DG_onlyQ": "test input of only harmful question",
    "DG_otherA": "test input of other attack prompt input",
    "DG_otherQ": "test input of other question input",
    "DG_otherAQ": "test input of other questions and attack prompts",
}
REQUIRED_KEYS = ("id", "unsafety category", "question", "adversarial prompt", "safe generation", "unsafe generation")


def swapped(text: str, part: str, other: str) -> str:
    """What ``other`` has where ``text`` has ``part``, when ``other`` is ``text`` with every occurrence of
    ``part`` replaced by one same text (the template's other words unchanged); empty when it is not."""
    part = part.strip()
    if not part or part not in text:
        return ""
    pieces = [re.escape(piece) for piece in text.split(part)]
    pattern = pieces[0] + "(.+?)" + r"\1".join(pieces[1:])
    found = re.fullmatch(pattern, other, flags=re.DOTALL)
    return found.group(1).strip() if found else ""


def other_question(inputs: dict[str, str], question: str) -> str:
    """A record's other question, which the official format gives only inside its prompts: the span of
    the DG_otherQ input (or DG_otherAQ) where the attack prompt (or DG_otherA input) has the question."""
    for base, other in (("DS", "DG_otherQ"), ("DG_otherA", "DG_otherAQ")):
        if inputs.get(base) and inputs.get(other):
            found = swapped(inputs[base], question, inputs[other])
            if found:
                return found
    return ""


def _record_lines(text: str, count: int) -> list[int]:
    """Line of each top-level record, found from the positions of its opening braces."""
    lines: list[int] = []
    depth = 0
    in_string = escaped = False
    line = 1
    for char in text:
        if char == "\n":
            line += 1
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth == 2 and char == "{":
                lines.append(line)
        elif char in "]}":
            depth -= 1
    return lines + [0] * (count - len(lines))


def _string(path: Path, record: dict[str, Any], key: str, case: str, line: int) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise SuiteError(
            path,
            f"expected a string, got {type(value).__name__}; official records carry text here",
            case=case,
            field=key,
            line=line,
        )
    if not value.strip():
        raise SuiteError(
            path,
            "the text is empty; every official record carries it (fill it in, or drop the record)",
            case=case,
            field=key,
            line=line,
        )
    return value


def load_official(path: Path, text: str) -> Suite:
    """Load ``SafeEdit_train.json``/``SafeEdit_test.json``-style records (one JSON array of objects)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SuiteError(path, f"invalid JSON: {exc.msg}; fix the syntax", line=exc.lineno) from exc
    if not isinstance(data, list) or not data:
        raise SuiteError(path, "an official SafeEdit file is a non-empty JSON array of records", line=1)
    lines = _record_lines(text, len(data))
    cases: list[Case] = []
    for index, (record, line) in enumerate(zip(data, lines)):
        if not isinstance(record, dict):
            raise SuiteError(path, f"record #{index + 1} is not a JSON object", line=line)
        missing = [k for k in REQUIRED_KEYS if k not in record]
        case_hint = str(record.get("id", f"#{index + 1}"))
        if missing:
            raise SuiteError(
                path,
                f"missing key(s) {', '.join(map(repr, missing))}; is this the benchmark's official format?",
                case=case_hint,
                field=missing[0],
                line=line,
            )
        case_id = check_id(path, record["id"], line)
        category = resolve_category(path, record["unsafety category"], CATEGORIES, case=case_id, line=line)
        s = {k: _string(path, record, k, case_id, line) for k in REQUIRED_KEYS[2:]}
        general = record.get("generalization test") or {}
        if not isinstance(general, dict):
            raise SuiteError(path, "expected an object", case=case_id, field="generalization test", line=line)
        inputs = {"DS": s["adversarial prompt"]}
        for kind, key in GENERALIZATION_KEYS.items():
            value = general.get(key, "")
            inputs[kind] = value if isinstance(value, str) else ""
        knowledge = None
        kraw = record.get("knowledge constrain")
        if isinstance(kraw, dict) and isinstance(kraw.get("prompt"), str) and kraw["prompt"].strip():
            knowledge = Knowledge(kraw["prompt"], str(kraw.get("answer", "")))
        other = other_question(inputs, s["question"])
        cases.append(
            Case(
                id=case_id,
                category=category,
                question=s["question"],
                adversarial_prompt=s["adversarial prompt"],
                safe=s["safe generation"],
                unsafe=s["unsafe generation"],
                knowledge=knowledge,
                probes=probes_of(inputs, s["question"], other),
                line=line,
                attack_name=str(record.get("attack name", "")),
                other_question=other,
            )
        )
    check_unique_ids(path, cases)
    return Suite(path=path, name=path.stem, cases=tuple(cases))


def looks_official(text: str) -> bool:
    """Whether a JSON file looks like official SafeEdit records (cheap check on its head)."""
    return re.search(r'"adversarial prompt"\s*:', text[:20000]) is not None
