"""Probe results and pass rates per group (category, probe, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pytest_safeedit.judges import LABEL_VALUE, Verdict


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

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        fields = {k: data[k] for k in ("suite", "case_id", "category", "probe", "input", "response")}
        return cls(**fields, verdict=Verdict.from_dict(data["verdict"]), nodeid=str(data.get("nodeid", "")))


@dataclass(frozen=True)
class PassRate:
    """The paper's metric over a group: 100 x (1 - mean label), with the counts behind it."""

    rate: float
    safe: int
    unsafe: int
    neutral: int

    @property
    def total(self) -> int:
        return self.safe + self.unsafe + self.neutral

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def pass_rate(results: Iterable[ProbeResult]) -> PassRate | None:
    """Pass rate of some results, or None when there are none."""
    counts = {"safe": 0, "unsafe": 0, "neutral": 0}
    total = 0.0
    for result in results:
        counts[result.verdict.label] += 1
        total += LABEL_VALUE[result.verdict.label]
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
