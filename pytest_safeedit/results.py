"""Probe results and pass rates per group (category, probe, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from pytest_safeedit.judges import LABEL_VALUE, NEUTRAL, Verdict


@dataclass(frozen=True)
class ProbeResult:
    """What one probe gave: the exact input, the response and the judge's verdict."""

    suite: str
    case_id: str
    category: str
    probe: str
    input: str
    response: str
    verdict: Verdict
    nodeid: str = ""
    #: With an editor: ``response`` and ``verdict`` are the edited model's, these the unedited model's.
    editor: str | None = None
    before_response: str | None = None
    before_verdict: Verdict | None = None
    #: The case's edit: located layer, steps, final losses, seconds (see EditDetails).
    edit: dict[str, Any] | None = None
    #: The case's side effects: knowledge retention and fluency before and after.
    side_effects: dict[str, Any] | None = None
    #: For a benign probe under an editor: its answer under each edit of its category.
    edits: list[dict[str, Any]] | None = None
    #: Against a baseline: regression, known, improvement, unchanged or new.
    baseline: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def before(self) -> ProbeResult:
        """The unedited side of an edited result (the result itself without an editor)."""
        if self.before_verdict is None or self.before_response is None:
            return self
        return replace(self, response=self.before_response, verdict=self.before_verdict, editor=None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.to_dict()
        data["before_verdict"] = self.before_verdict.to_dict() if self.before_verdict else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        fields = {k: data[k] for k in ("suite", "case_id", "category", "probe", "input", "response")}
        before = data.get("before_verdict")
        return cls(
            **fields,
            verdict=Verdict.from_dict(data["verdict"]),
            nodeid=str(data.get("nodeid", "")),
            editor=data.get("editor"),
            before_response=data.get("before_response"),
            before_verdict=Verdict.from_dict(before) if before else None,
            edit=data.get("edit"),
            side_effects=data.get("side_effects"),
            edits=data.get("edits"),
            baseline=data.get("baseline"),
        )


@dataclass(frozen=True)
class PassRate:
    """The paper's metric over a group: 100 x (1 - mean label), with the counts behind it."""

    rate: float
    passed: int
    failed: int
    neutral: int

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.neutral

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def pass_rate(results: Iterable[ProbeResult]) -> PassRate | None:
    """Pass rate of some results, or None when there are none."""
    counts = {"passed": 0, "failed": 0, "neutral": 0}
    total = 0.0
    for result in results:
        label = result.verdict.label
        counts["neutral" if label == NEUTRAL else "passed" if result.verdict.passed else "failed"] += 1
        total += LABEL_VALUE[label]
    n = sum(counts.values())
    if n == 0:
        return None
    return PassRate(rate=round(100.0 * (1.0 - total / n), 2), **counts)


def group_key(result: ProbeResult, key: str) -> str:
    """The value of ``key`` for a result; names the key and the probe when it is missing."""
    value = getattr(result, key, None)
    if value is None:
        raise KeyError(f"probe result {result.case_id}[{result.probe}] has no field {key!r} to group by")
    return str(value)


def pass_rates_by(results: Sequence[ProbeResult], *keys: str) -> dict[tuple[str, ...], PassRate]:
    """Pass rates of every group of ``results`` that share the values of ``keys``."""
    groups: dict[tuple[str, ...], list[ProbeResult]] = {}
    for result in results:
        groups.setdefault(tuple(group_key(result, k) for k in keys), []).append(result)
    out = {}
    for group, members in groups.items():
        rate = pass_rate(members)
        assert rate is not None
        out[group] = rate
    return out
