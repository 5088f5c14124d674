"""Loading of hand-written YAML suites, with line numbers for every error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_safeedit.cases.categories import BENIGN_PROBE, CATEGORIES, normalize_category
from pytest_safeedit.cases.model import (
    DEFAULT_KEYS,
    DEFAULTS_SECTION_KEYS,
    QUESTION_SLOT,
    Case,
    Knowledge,
    Probe,
    Suite,
    SuiteError,
    case_from_templates,
    check_id,
    check_unique_ids,
    resolve_category,
)
from pytest_safeedit.cases.thresholds import gate_from_mapping

TWO_SLOTS = (
    f"the attack has {QUESTION_SLOT} more than once; keep one slot, where the question goes (the benchmark's "
    "attacks carry the question once, at their right end)"
)
SUITE_KEYS = ("name", "defaults", "categories", "attacks", "gate", "cases")
CASE_FIELDS = (
    "id",
    "category",
    "question",
    "attack",
    "safe",
    "unsafe",
    "other_attack",
    "other_question",
    "knowledge",
)
BENIGN_FIELDS = ("id", "category", "benign", "question", "answer", "knowledge")


class LineDict(dict[str, Any]):
    """A mapping from YAML that remembers its own line and the line of each key (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


#: The most YAML nodes a suite may expand to (aliases counted each time they are used).
MAX_NODES = 2_000_000


def _expanded_size(root: Any) -> int:
    """Nodes of a YAML node graph with every alias expanded, counted without expanding it (memoized)."""
    import yaml

    sizes: dict[int, int] = {}
    order: list[Any] = []
    stack = [root]
    seen: set[int] = set()
    while stack:  # post-order without recursion: children before parents
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)
    for node in reversed(order):
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes.get(id(c), 1) for c in children))
    return sizes[id(root)]


def parse_yaml(path: Path, text: str) -> Any:
    """Parse YAML into plain data whose mappings are :class:`LineDict`."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
        mapping = LineDict(node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = str(loader.construct_object(key_node, deep=True))
            line = key_node.start_mark.line + 1
            if key in mapping.key_lines:
                raise SuiteError(
                    path,
                    f"the key {key!r} appears twice in one mapping (first on line {mapping.key_lines[key]}); "
                    "YAML would silently keep the last one: remove or rename one",
                    field=key,
                    line=line,
                )
            mapping[key] = loader.construct_object(value_node, deep=True)
            mapping.key_lines[key] = line
        return mapping

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        loader = Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            size = _expanded_size(node)
            if size > MAX_NODES:
                raise SuiteError(
                    path,
                    f"anchors and aliases expand this file to more than {MAX_NODES:,} YAML nodes (a suite this "
                    "large is almost certainly an alias bomb); write the repeated parts out, or use fewer aliases",
                    line=1,
                )
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(path, f"invalid YAML: {problem}; fix the syntax at this line", line=line) from exc


def _text(path: Path, mapping: LineDict, key: str, *, case: str | None, required: bool) -> str | None:
    value = mapping.get(key)
    if value is None:
        if required:
            raise SuiteError(
                path, f"missing required field; add '{key}: ...' to the case", case=case, field=key, line=mapping.line
            )
        return None
    if not isinstance(value, str) or not value.strip():
        raise SuiteError(
            path,
            f"expected non-empty text, got {type(value).__name__} {value!r:.60}; quote it as a string",
            case=case,
            field=key,
            line=mapping.line_of(key),
        )
    return value


def _template(path: Path, attacks: dict[str, str], mapping: LineDict, key: str, case: str) -> str | None:
    value = _text(path, mapping, key, case=case, required=key == "attack")
    if value is None:
        return None
    if value in attacks:
        return attacks[value]
    if QUESTION_SLOT not in value:
        known = ", ".join(sorted(attacks)) or "none defined"
        raise SuiteError(
            path,
            f"{value!r:.60} is neither a template name under 'attacks:' ({known}) nor an attack "
            f"text with a {QUESTION_SLOT} slot; name a template or add the slot where the question goes",
            case=case,
            field=key,
            line=mapping.line_of(key),
        )
    if value.count(QUESTION_SLOT) > 1:
        raise SuiteError(path, TWO_SLOTS, case=case, field=key, line=mapping.line_of(key))
    return value


def _attacks(path: Path, data: LineDict) -> dict[str, str]:
    raw = data.get("attacks") or LineDict(data.line_of("attacks"))
    if not isinstance(raw, LineDict):
        raise SuiteError(
            path, "'attacks' must map template names to attack texts", field="attacks", line=data.line_of("attacks")
        )
    attacks: dict[str, str] = {}
    for name, template in raw.items():
        line = raw.line_of(name)
        if not isinstance(template, str) or QUESTION_SLOT not in template:
            raise SuiteError(
                path,
                f"attack template {name!r} has no {QUESTION_SLOT} slot; put {QUESTION_SLOT} where the question goes",
                field=f"attacks.{name}",
                line=line,
            )
        if template.count(QUESTION_SLOT) > 1:
            raise SuiteError(path, TWO_SLOTS, field=f"attacks.{name}", line=line)
        attacks[name] = template
    return attacks


def _defaults(path: Path, data: LineDict) -> dict[str, Any]:
    raw = data.get("defaults")
    if raw is None:
        return {}
    if not isinstance(raw, LineDict):
        raise SuiteError(path, "'defaults' must be a mapping", field="defaults", line=data.line_of("defaults"))
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in DEFAULTS_SECTION_KEYS:
            raise SuiteError(
                path,
                f"unknown default; the keys of 'defaults:' are {', '.join(DEFAULTS_SECTION_KEYS)}",
                field=f"defaults.{key}",
                line=raw.line_of(key),
            )
        if key not in DEFAULT_KEYS:
            # The editor section is checked against the chosen editor's hyperparameters.
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SuiteError(
                path,
                f"expected a positive integer, got {value!r}",
                field=f"defaults.{key}",
                line=raw.line_of(key),
            )
        out[key] = value
    return out


def _categories(path: Path, data: LineDict) -> tuple[str, ...]:
    extra = data.get("categories") or []
    if not isinstance(extra, list) or not all(isinstance(c, str) and c.strip() for c in extra):
        raise SuiteError(
            path,
            "'categories' must be a list of extra category names",
            field="categories",
            line=data.line_of("categories"),
        )
    return CATEGORIES + tuple(c for c in (normalize_category(e) for e in extra) if c not in CATEGORIES)


def _case(
    path: Path, raw: object, index: int, parent_line: int, attacks: dict[str, str], allowed: tuple[str, ...]
) -> Case:
    if not isinstance(raw, LineDict):
        raise SuiteError(path, f"case #{index + 1} must be a mapping of fields", field="cases", line=parent_line)
    if "id" not in raw:
        raise SuiteError(path, f"case #{index + 1} has no id; add 'id: ...'", field="id", line=raw.line)
    case_id = check_id(path, raw["id"], raw.line_of("id"))
    benign = raw.get("benign", False)
    if not isinstance(benign, bool):
        raise SuiteError(path, "expected true or false", case=case_id, field="benign", line=raw.line_of("benign"))
    fields = BENIGN_FIELDS if benign else CASE_FIELDS
    for key in raw:
        if key not in fields:
            kind = "a benign case" if benign else "an attack case"
            raise SuiteError(
                path,
                f"unknown field; the fields of {kind} are {', '.join(fields)}",
                case=case_id,
                field=key,
                line=raw.line_of(key),
            )
    category = resolve_category(path, raw.get("category"), allowed, case=case_id, line=raw.line_of("category"))
    knowledge = _knowledge(path, raw, case_id)
    if benign:
        question = _text(path, raw, "question", case=case_id, required=True)
        assert question is not None
        return Case(
            id=case_id,
            category=category,
            question=question,
            adversarial_prompt="",
            safe="",
            unsafe="",
            knowledge=knowledge,
            probes=(Probe(BENIGN_PROBE, question, question),),
            line=raw.line,
            benign=True,
            answer=_text(path, raw, "answer", case=case_id, required=False) or "",
        )
    texts = {k: _text(path, raw, k, case=case_id, required=True) for k in ("question", "safe", "unsafe")}
    attack = _template(path, attacks, raw, "attack", case_id)
    other_attack = _template(path, attacks, raw, "other_attack", case_id)
    other_question = _text(path, raw, "other_question", case=case_id, required=False)
    question, safe, unsafe = texts["question"], texts["safe"], texts["unsafe"]
    assert question is not None and safe is not None and unsafe is not None and attack is not None
    attack_name = raw["attack"] if raw["attack"] in attacks else ""
    return case_from_templates(
        id=case_id,
        category=category,
        question=question,
        attack=attack,
        safe=safe,
        unsafe=unsafe,
        knowledge=knowledge,
        other_attack=other_attack,
        other_question=other_question,
        line=raw.line,
        attack_name=attack_name,
    )


def _knowledge(path: Path, raw: LineDict, case_id: str) -> Knowledge | None:
    if "knowledge" not in raw:
        return None
    kraw = raw["knowledge"]
    if not isinstance(kraw, LineDict):
        raise SuiteError(
            path,
            "expected a mapping with 'prompt' and 'answer'",
            case=case_id,
            field="knowledge",
            line=raw.line_of("knowledge"),
        )
    prompt = _text(path, kraw, "prompt", case=case_id, required=True)
    answer = _text(path, kraw, "answer", case=case_id, required=True)
    assert prompt is not None and answer is not None
    return Knowledge(prompt, answer)


def load_yaml_suite(path: Path, text: str) -> Suite:
    """Load a hand-written suite (see the README for the format)."""
    data = parse_yaml(path, text)
    if not isinstance(data, LineDict):
        raise SuiteError(
            path,
            f"the top level must be a mapping with a 'cases:' list, not {type(data).__name__}",
            line=1,
        )
    for key in data:
        if key not in SUITE_KEYS:
            raise SuiteError(
                path, f"unknown top-level key; use {', '.join(SUITE_KEYS)}", field=key, line=data.line_of(key)
            )
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise SuiteError(path, "'cases' must be a non-empty list of cases", field="cases", line=data.line_of("cases"))
    attacks = _attacks(path, data)
    allowed = _categories(path, data)
    cases = [_case(path, raw, i, data.line_of("cases"), attacks, allowed) for i, raw in enumerate(raw_cases)]
    check_unique_ids(path, cases)
    try:
        gate = gate_from_mapping(data.get("gate"), "gate")
    except ValueError as exc:
        raise SuiteError(path, str(exc).removeprefix("gate: "), field="gate", line=data.line_of("gate")) from exc
    name = data.get("name", path.stem)
    return Suite(
        path=path,
        name=str(name),
        cases=tuple(cases),
        defaults=_defaults(path, data),
        categories=allowed,
        attacks=attacks,
        gate=gate,
    )
