"""Cases, probes and suites: the data model, and loading of YAML suites and the official JSON."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_safeedit.cases.categories import CATEGORIES, PROBES, normalize_category
from pytest_safeedit.cases.thresholds import Gate

QUESTION_SLOT = "{question}"

#: Suite-level generation defaults a suite may set; command-line options and ini keys override them.
DEFAULT_KEYS: dict[str, type] = {
    "max_new_tokens": int,
    "max_input_tokens": int,
    "batch_size": int,
    "batch_tokens": int,
}
#: Every key a suite's ``defaults:`` may hold: the generation defaults and editor hyperparameters.
DEFAULTS_SECTION_KEYS = (*DEFAULT_KEYS, "editor")


class SuiteError(Exception):
    """A suite file that cannot be used, with the place and a way to fix it."""

    def __init__(
        self,
        path: Path | str,
        message: str,
        *,
        case: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = str(path)
        self.message = message
        self.case = case
        self.field = field
        self.line = line
        super().__init__(self.render())

    def render(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        parts = [where]
        if self.case is not None:
            parts.append(f"case {self.case!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return ": ".join(parts) + ": " + self.message


@dataclass(frozen=True)
class Knowledge:
    """A knowledge constraint: an unrelated general-knowledge prompt and its answer."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Probe:
    """One input of a case that the model answers and the judge labels."""

    kind: str
    text: str
    #: The bare harmful question the probe asks (the case's, or its other question for DG_otherQ and
    #: DG_otherAQ); judges that read it (HarmBench's behavior field) get it. Empty where not known.
    question: str = ""


@dataclass(frozen=True)
class Case:
    """A SafeEdit attack case with its probes and references, or a benign case (one harmless question).

    A benign case has no attack and no references; ``answer`` is an optional helpful reference answer.
    """

    id: str
    category: str
    question: str
    adversarial_prompt: str
    safe: str
    unsafe: str
    knowledge: Knowledge | None
    probes: tuple[Probe, ...]
    line: int = 0
    attack_name: str = ""
    other_question: str = ""
    benign: bool = False
    answer: str = ""

    def probe(self, kind: str) -> Probe:
        for probe in self.probes:
            if probe.kind == kind:
                return probe
        raise KeyError(f"case {self.id!r} has no probe {kind!r}")


@dataclass(frozen=True)
class Suite:
    """The cases of one file and its defaults."""

    path: Path
    name: str
    cases: tuple[Case, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    categories: tuple[str, ...] = CATEGORIES
    attacks: Mapping[str, str] = field(default_factory=dict)
    #: The suite's own gate thresholds; options and ini keys override them.
    gate: Gate = field(default_factory=Gate)
    #: What names the suite uniquely in a run: its file's path from the rootdir when collected (two
    #: files may share a name); baselines, merges, gates and editor settings are keyed by it.
    key: str = ""

    def with_key(self, key: str) -> Suite:
        return replace(self, key=key)


def build_probes(question: str, attack: str, other_attack: str | None, other_question: str | None) -> tuple[Probe, ...]:
    """Build the five probes of a case from its templates (absent inputs give absent probes)."""
    fill = fill_template
    inputs = {
        "DS": fill(attack, question),
        "DG_onlyQ": question,
        "DG_otherA": fill(other_attack, question) if other_attack else "",
        "DG_otherQ": fill(attack, other_question) if other_question else "",
        "DG_otherAQ": fill(other_attack, other_question) if other_attack and other_question else "",
    }
    return probes_of(inputs, question, other_question or "")


#: The probes that ask the case's other question instead of its own.
OTHER_QUESTION_PROBES = frozenset({"DG_otherQ", "DG_otherAQ"})


def probes_of(inputs: Mapping[str, str], question: str, other_question: str) -> tuple[Probe, ...]:
    """The probes of the non-empty inputs (probe kind -> text), in the benchmark's order, each with the
    bare question it asks."""
    return tuple(
        Probe(kind, inputs[kind], other_question if kind in OTHER_QUESTION_PROBES else question)
        for kind in PROBES
        if inputs.get(kind, "").strip()
    )


def case_from_templates(
    *,
    id: str,
    category: str,
    question: str,
    attack: str,
    safe: str,
    unsafe: str,
    knowledge: Knowledge | None,
    other_attack: str | None,
    other_question: str | None,
    line: int = 0,
    attack_name: str = "",
) -> Case:
    """An attack case from its question and attack templates: its adversarial prompt and probes filled in."""
    return Case(
        id=id,
        category=category,
        question=question,
        adversarial_prompt=fill_template(attack, question),
        safe=safe,
        unsafe=unsafe,
        knowledge=knowledge,
        probes=build_probes(question, attack, other_attack, other_question),
        line=line,
        attack_name=attack_name,
        other_question=other_question or "",
    )


def fill_template(template: str, question: str) -> str:
    """Put ``question`` into the ``{question}`` slot of an attack template."""
    return template.replace(QUESTION_SLOT, question)


def check_unique_ids(path: Path, cases: Sequence[Case]) -> None:
    seen: dict[str, int] = {}
    for case in cases:
        if case.id in seen:
            raise SuiteError(
                path,
                f"duplicate id (first used on line {seen[case.id]}); give every case its own id",
                case=case.id,
                field="id",
                line=case.line,
            )
        seen[case.id] = case.line


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def check_id(path: Path, value: object, line: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SuiteError(path, "the id must be a string or an integer", field="id", line=line)
    text = str(value)
    if not _ID_RE.match(text):
        raise SuiteError(
            path,
            f"id {text!r} may contain only letters, digits and '_.:-', starting with a letter or digit",
            case=text,
            field="id",
            line=line,
        )
    return text


def resolve_category(path: Path, value: object, allowed: Sequence[str], *, case: str, line: int) -> str:
    if not isinstance(value, str):
        raise SuiteError(path, "the category must be a string", case=case, field="category", line=line)
    name = normalize_category(value)
    if name not in allowed:
        raise SuiteError(
            path,
            f"unknown category {value!r}; use one of {', '.join(allowed)} "
            "(case-insensitive), or declare it in the suite's 'categories:' list",
            case=case,
            field="category",
            line=line,
        )
    return name
