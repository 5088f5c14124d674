"""The CI gate's thresholds: minimum pass rates in total, per category and per probe (data: a suite's
``gate:`` section, options and ini keys; :mod:`pytest_safeedit.results.gate` checks results against them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_safeedit.cases.categories import normalize_category

POINT, LOWER = "point", "lower"
GATE_ON = (POINT, LOWER)


@dataclass(frozen=True)
class Gate:
    """Minimum pass rates (0 to 1). Empty when nothing is configured."""

    min_pass_rate: float | None = None
    categories: Mapping[str, float] = field(default_factory=dict)
    probes: Mapping[str, float] = field(default_factory=dict)
    #: What must reach a threshold: the pass rate itself ("point"), or the lower bound of its 95% Wilson
    #: interval ("lower": the rate is at or above the threshold with 95% confidence).
    on: str = POINT
    #: The least share of the judge check's reference verdicts that must agree with the references.
    min_judge_agreement: float | None = None

    @property
    def configured(self) -> bool:
        return (
            self.min_pass_rate is not None
            or bool(self.categories)
            or bool(self.probes)
            or self.min_judge_agreement is not None
        )

    def merged_over(self, other: Gate) -> Gate:
        """This gate's thresholds, falling back to ``other``'s where this one sets none."""
        return Gate(
            self.min_pass_rate if self.min_pass_rate is not None else other.min_pass_rate,
            {**other.categories, **self.categories},
            {**other.probes, **self.probes},
            self.on,
            self.min_judge_agreement if self.min_judge_agreement is not None else other.min_judge_agreement,
        )

    def thresholds(self) -> int:
        return (
            (self.min_pass_rate is not None)
            + len(self.categories)
            + len(self.probes)
            + (self.min_judge_agreement is not None)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_pass_rate": self.min_pass_rate,
            "categories": dict(self.categories),
            "probes": dict(self.probes),
            "on": self.on,
            "min_judge_agreement": self.min_judge_agreement,
        }

    def describe(self) -> str:
        """How the thresholds are applied, for the summary."""
        if self.on == LOWER:
            return "the lower bound of each rate's 95% Wilson interval must reach its threshold"
        return "each pass rate must reach its threshold"

    def unknown_names(self, categories: Iterable[str], probes: Iterable[str]) -> str | None:
        """A message naming the thresholds whose category or probe no collected suite has, or None."""
        known_categories, known_probes = sorted(set(categories)), sorted(set(probes))
        problems = []
        unknown = sorted(set(self.categories) - set(known_categories))
        if unknown:
            problems.append(
                f"category threshold(s) for {', '.join(map(repr, unknown))}, which no collected suite has "
                f"(categories: {', '.join(known_categories)})"
            )
        unknown = sorted(set(self.probes) - set(known_probes))
        if unknown:
            problems.append(
                f"probe threshold(s) for {', '.join(map(repr, unknown))}, which no collected suite has "
                f"(probes: {', '.join(known_probes)})"
            )
        if not problems:
            return None
        return "SafeEdit gate: " + "; ".join(problems) + "; fix the name (a category is matched case-insensitively)"


def gate_from_pairs(
    min_pass_rate: float | None,
    categories: Iterable[tuple[str, float]],
    probes: Iterable[tuple[str, float]],
    on: str = POINT,
    min_judge_agreement: float | None = None,
) -> Gate:
    return Gate(min_pass_rate, {normalize_category(c): r for c, r in categories}, dict(probes), on, min_judge_agreement)


def gate_from_mapping(data: Any, source: str) -> Gate:
    """A suite's ``gate:`` section: ``{min_pass_rate: R, categories: {name: R}, probes: {name: R}}``."""
    if data is None:
        return Gate()
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: 'gate' must be a mapping with min_pass_rate, categories and probes")
    unknown = set(data) - {"min_pass_rate", "categories", "probes", "min_judge_agreement"}
    if unknown:
        raise ValueError(
            f"{source}: unknown gate key(s) {', '.join(sorted(map(str, unknown)))}; use min_pass_rate, categories, "
            "probes, min_judge_agreement"
        )

    def rate(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{source}: {where}: expected a rate from 0 to 1, got {value!r}")
        return float(value)

    def rates(key: str) -> dict[str, float]:
        section = data.get(key) or {}
        if not isinstance(section, Mapping):
            raise ValueError(f"{source}: gate.{key} must map names to rates")
        return {str(k): rate(v, f"gate.{key}.{k}") for k, v in section.items()}

    minimum = data.get("min_pass_rate")
    agreement = data.get("min_judge_agreement")
    return gate_from_pairs(
        None if minimum is None else rate(minimum, "gate.min_pass_rate"),
        rates("categories").items(),
        rates("probes").items(),
        min_judge_agreement=None if agreement is None else rate(agreement, "gate.min_judge_agreement"),
    )
