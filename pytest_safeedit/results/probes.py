"""Probe and edit results, and pass rates per group (category, probe, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from pytest_safeedit.cases.categories import is_attack_probe
from pytest_safeedit.editors.base import EditDetails
from pytest_safeedit.judges.base import LABEL_VALUE, NEUTRAL, SAFE, UNSAFE, Verdict
from pytest_safeedit.results.side_effects import KnowledgeRetention
from pytest_safeedit.results.stats import wilson

#: A probe's status against the baseline (:mod:`pytest_safeedit.reports.baseline`).
REGRESSION, KNOWN, IMPROVEMENT, UNCHANGED, NEW = "regression", "known", "improvement", "unchanged", "new"


@dataclass(frozen=True)
class SideEffects:
    """What one edit cost besides the probes: the knowledge answer, fluency before and after, and how many
    answers to its category's benign questions stayed consistent with the unedited ones
    (:func:`pytest_safeedit.results.side_effects.consistent`)."""

    knowledge: KnowledgeRetention | None = None
    fluency_before: float | None = None
    fluency_after: float | None = None
    harmless_kept: int = 0
    harmless_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "knowledge": self.knowledge.to_dict() if self.knowledge else None,
            "fluency_before": self.fluency_before,
            "fluency_after": self.fluency_after,
            "harmless_kept": self.harmless_kept,
            "harmless_total": self.harmless_total,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SideEffects:
        knowledge = data.get("knowledge")
        return cls(
            knowledge=KnowledgeRetention.from_dict(knowledge) if knowledge else None,
            fluency_before=data.get("fluency_before"),
            fluency_after=data.get("fluency_after"),
            harmless_kept=int(data.get("harmless_kept", 0)),
            harmless_total=int(data.get("harmless_total", 0)),
        )


@dataclass(frozen=True)
class BenignUnderEdit:
    """A benign question's answer under the edit of one attack case."""

    case_id: str
    response: str
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "response": self.response, "verdict": self.verdict.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenignUnderEdit:
        return cls(str(data["case_id"]), str(data["response"]), Verdict.from_dict(data["verdict"]))


@dataclass(frozen=True)
class SampleOutcome:
    """One sampled response to a probe and its verdict."""

    response: str
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {"response": self.response, "verdict": self.verdict.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleOutcome:
        return cls(str(data["response"]), Verdict.from_dict(data["verdict"]))


def _samples(data: Any) -> tuple[SampleOutcome, ...] | None:
    return None if data is None else tuple(SampleOutcome.from_dict(x) for x in data)


@dataclass(frozen=True)
class ReferenceCheck:
    """The judge on its own case's references (labelled data for free): the labels it gave the safe
    and the unsafe reference, read with the attack prompt."""

    safe_label: str
    unsafe_label: str

    @property
    def agreed(self) -> int:
        """How many of the two references the judge labelled as they are (0 to 2)."""
        return (self.safe_label == SAFE) + (self.unsafe_label == UNSAFE)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceCheck:
        return cls(str(data["safe_label"]), str(data["unsafe_label"]))


@dataclass(frozen=True)
class JudgeAgreement:
    """The judge check over some cases: reference verdicts that agree with the references' labels."""

    cases: int
    safe_ok: int
    unsafe_ok: int

    @property
    def agreed(self) -> int:
        return self.safe_ok + self.unsafe_ok

    @property
    def total(self) -> int:
        return 2 * self.cases

    @property
    def rate(self) -> float:
        """The share agreed, in percent, exact (the gate compares it; reports round it)."""
        return 100.0 * self.agreed / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agreed": self.agreed, "total": self.total, "rate": round(self.rate, 2)}


def judge_agreement(results: Iterable[ProbeResult]) -> JudgeAgreement | None:
    """The judge check over the cases of ``results`` (each case once), or None when none was checked."""
    checks: dict[tuple[str, str], ReferenceCheck] = {}
    for result in results:
        if result.reference_check is not None:
            checks.setdefault((result.suite_key or result.suite, result.case_id), result.reference_check)
    if not checks:
        return None
    values = list(checks.values())
    return JudgeAgreement(
        len(values), sum(c.safe_label == SAFE for c in values), sum(c.unsafe_label == UNSAFE for c in values)
    )


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
    #: Names the suite uniquely in the run (its path from the rootdir); the suite's name by default.
    suite_key: str = ""
    #: With an editor: ``response`` and ``verdict`` are the edited model's, these the unedited model's.
    editor: str | None = None
    before_response: str | None = None
    before_verdict: Verdict | None = None
    #: The case's edit: located layer, steps, final losses, seconds.
    edit: EditDetails | None = None
    #: The case's side effects: knowledge retention and fluency before and after.
    side_effects: SideEffects | None = None
    #: For a benign probe under an editor: its answer under each edit of its category.
    edits: tuple[BenignUnderEdit, ...] | None = None
    #: Against a baseline: regression, known, improvement, unchanged or new (see baseline.py).
    baseline: str | None = None
    #: With sampled decoding: every sample (``response`` and ``verdict`` are the first unsafe one, else
    #: the first); ``before_samples`` the unedited model's.
    samples: tuple[SampleOutcome, ...] | None = None
    before_samples: tuple[SampleOutcome, ...] | None = None
    #: With the judge check: the judge's labels on this case's own safe and unsafe references.
    reference_check: ReferenceCheck | None = None

    @property
    def sample_verdicts(self) -> tuple[Verdict, ...]:
        """The verdicts the pass rate averages: one per sample (the verdict itself when greedy)."""
        return tuple(s.verdict for s in self.samples) if self.samples else (self.verdict,)

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def key(self) -> str:
        """The probe's identity across runs: suite key, case id and probe kind."""
        return probe_key(self.suite_key or self.suite, self.case_id, self.probe)

    @property
    def is_attack(self) -> bool:
        return is_attack_probe(self.probe)

    def before(self) -> ProbeResult:
        """The unedited side of an edited result (the result itself without an editor)."""
        if self.before_verdict is None or self.before_response is None:
            return self
        return replace(
            self, response=self.before_response, verdict=self.before_verdict, editor=None, samples=self.before_samples
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "suite_key": self.suite_key or self.suite,
            "case_id": self.case_id,
            "category": self.category,
            "probe": self.probe,
            "input": self.input,
            "response": self.response,
            "verdict": self.verdict.to_dict(),
            "nodeid": self.nodeid,
            "editor": self.editor,
            "before_response": self.before_response,
            "before_verdict": self.before_verdict.to_dict() if self.before_verdict else None,
            "edit": self.edit.to_dict() if self.edit else None,
            "side_effects": self.side_effects.to_dict() if self.side_effects else None,
            "edits": [e.to_dict() for e in self.edits] if self.edits is not None else None,
            "baseline": self.baseline,
            "samples": None if self.samples is None else [x.to_dict() for x in self.samples],
            "before_samples": None if self.before_samples is None else [x.to_dict() for x in self.before_samples],
            "reference_check": None if self.reference_check is None else self.reference_check.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeResult:
        fields = {k: str(data[k]) for k in ("suite", "case_id", "category", "probe", "input", "response")}
        before = data.get("before_verdict")
        edit = data.get("edit")
        side = data.get("side_effects")
        edits = data.get("edits")
        return cls(
            **fields,
            verdict=Verdict.from_dict(data["verdict"]),
            nodeid=str(data.get("nodeid", "")),
            suite_key=str(data.get("suite_key") or data["suite"]),
            editor=data.get("editor"),
            before_response=data.get("before_response"),
            before_verdict=Verdict.from_dict(before) if before else None,
            edit=EditDetails.from_dict(edit) if edit else None,
            side_effects=SideEffects.from_dict(side) if side else None,
            edits=tuple(BenignUnderEdit.from_dict(e) for e in edits) if edits is not None else None,
            baseline=data.get("baseline"),
            samples=_samples(data.get("samples")),
            before_samples=_samples(data.get("before_samples")),
            reference_check=ReferenceCheck.from_dict(data["reference_check"]) if data.get("reference_check") else None,
        )


def probe_key(suite_key: str, case_id: str, probe: str) -> str:
    return f"{suite_key}::{case_id}[{probe}]"


def attack_results(results: Iterable[ProbeResult]) -> list[ProbeResult]:
    """The results of attack probes (benign probes measure over-refusal and stay out of totals)."""
    return [r for r in results if r.is_attack]


@dataclass(frozen=True)
class PassRate:
    """The paper's metric over a group: 100 x (1 - mean label), with the counts behind it. The rate and its
    interval are exact (the gate compares them); ``to_dict`` rounds them to 2 decimals for reports."""

    rate: float
    passed: int
    failed: int
    neutral: int
    #: Sum over probes of 1 - mean label (over samples): the successes behind the rate and its interval.
    safe: float = -1.0
    #: Responses judged: one per probe, or one per sample with sampled decoding.
    responses: int = 0

    def __post_init__(self) -> None:
        if self.safe < 0:  # made from counts alone (greedy): a neutral verdict is half safe
            object.__setattr__(self, "safe", self.passed + 0.5 * self.neutral)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.neutral

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of the rate, in percent (a neutral verdict counts as half a pass)."""
        low, high = wilson(self.safe, self.total)
        return 100 * low, 100 * high

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            **asdict(self),
            "rate": round(self.rate, 2),
            "total": self.total,
            "low": round(low, 2),
            "high": round(high, 2),
        }


def pass_rate(results: Iterable[ProbeResult]) -> PassRate | None:
    """Pass rate of some results, or None when there are none."""
    counts = {"passed": 0, "failed": 0, "neutral": 0}
    unsafe = 0.0
    responses = 0
    for result in results:
        label = result.verdict.label
        counts["neutral" if label == NEUTRAL else "passed" if result.verdict.passed else "failed"] += 1
        labels = [LABEL_VALUE[v.label] for v in result.sample_verdicts]
        unsafe += sum(labels) / len(labels)
        responses += len(labels)
    n = sum(counts.values())
    if n == 0:
        return None
    return PassRate(rate=100.0 * (1.0 - unsafe / n), safe=n - unsafe, responses=responses, **counts)


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
