"""Regression baselines: a previous JSON report, compared probe by probe."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pytest_safeedit.config.settings import GenerationSettings
from pytest_safeedit.reports.json_report import ReportError, read_report
from pytest_safeedit.results.probes import (  # the statuses, re-exported: baselines give them
    IMPROVEMENT as IMPROVEMENT,
)
from pytest_safeedit.results.probes import (
    KNOWN as KNOWN,
)
from pytest_safeedit.results.probes import (
    NEW as NEW,
)
from pytest_safeedit.results.probes import (
    REGRESSION as REGRESSION,
)
from pytest_safeedit.results.probes import (
    UNCHANGED as UNCHANGED,
)
from pytest_safeedit.results.probes import (
    ProbeResult,
)
from pytest_safeedit.results.stats import McNemar, guarded

#: Metadata that must match for a comparison to mean anything (the model may differ: that is the point).
COMPARED = ("judge", "editor", "generation", "editor_hyperparameters")


class BaselineError(Exception):
    """A baseline file that cannot be used."""


#: Compared metadata recorded per suite (by suite key): only the suites both runs have are compared.
PER_SUITE = ("generation", "editor_hyperparameters")


def response_settings(generation: Any) -> Any:
    """One suite's recorded generation settings less those that do not change a response: what the
    generation cache key holds (:meth:`GenerationSettings.cache_part`: not the batch size, nor the
    sampling settings under greedy decoding) and what the record adds (the chat-template mode)."""
    if not isinstance(generation, Mapping):
        return generation
    names = {f.name for f in fields(GenerationSettings)}
    recorded = GenerationSettings(**{k: v for k, v in generation.items() if k in names})
    return {**recorded.cache_part(), **{k: v for k, v in generation.items() if k not in names}}


def setup_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The compared setup that differs between two runs' metadata, as readable lines (per-suite
    settings are compared for the suites both runs have; generation settings only where they change a
    response, so that a CPU run at batch size 64 compares with a GPU run at 16)."""
    out = []
    for key in COMPARED:
        if key not in a or key not in b:
            continue
        mine, theirs = a[key], b[key]
        if key in PER_SUITE and isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            shared = sorted(set(mine) & set(theirs))
            mine, theirs = {k: mine[k] for k in shared}, {k: theirs[k] for k in shared}
            if key == "generation":
                mine = {k: response_settings(v) for k, v in mine.items()}
                theirs = {k: response_settings(v) for k, v in theirs.items()}
        if mine != theirs:
            out.append(f"{key}: baseline {mine!r}, this run {theirs!r}")
    return out


def fails_run(result: ProbeResult) -> bool:
    """Whether a result fails the run: unsafe, unless the baseline already knew it unsafe (xfail)."""
    return not result.passed and result.baseline != KNOWN


@dataclass(frozen=True)
class Baseline:
    """Which probes passed in an earlier run, and that run's metadata."""

    path: str
    passed: Mapping[str, bool]
    metadata: Mapping[str, Any]
    suites: frozenset[str]

    def status(self, key: str, passed_now: bool) -> str:
        before = self.passed.get(key)
        if before is None:
            return NEW
        if before and not passed_now:
            return REGRESSION
        if not before and not passed_now:
            return KNOWN
        if not before and passed_now:
            return IMPROVEMENT
        return UNCHANGED

    def mismatches(self, metadata: Mapping[str, Any], suites: set[str]) -> list[str]:
        """What differs between the baseline's run and this one, as readable lines."""
        out = setup_differences(self.metadata, metadata)
        if suites and self.suites and suites != self.suites:
            out.append(f"suites: baseline {sorted(self.suites)}, this run {sorted(suites)}")
        return out


def load_baseline(path: str) -> Baseline:
    try:
        report = read_report(path, "baseline")
    except ReportError as exc:
        raise BaselineError(f"{exc}; write a baseline with --safeedit-update-baseline") from None
    return Baseline(
        path=path,
        passed={r.key: r.passed for r in report.results},
        metadata=report.metadata,
        suites=frozenset(r.suite_key for r in report.results),
    )


def paired_test(results: Sequence[ProbeResult]) -> McNemar:
    """McNemar's exact test on the probes this run shares with the baseline."""
    shared = [r for r in results if r.baseline not in (None, NEW)]
    return McNemar(
        shared=len(shared),
        b=sum(r.baseline == REGRESSION for r in shared),
        c=sum(r.baseline == IMPROVEMENT for r in shared),
    )


def comparison_metadata(path: str, results: Sequence[ProbeResult]) -> dict[str, Any]:
    """The paired test against the baseline at ``path``, as the report records it; when the test cannot
    be computed, a warning and the counts with the ``error`` in place of the p-value."""
    test = paired_test(results)
    return guarded(
        "the paired test against the baseline",
        lambda: {"path": path, **test.to_dict()},
        lambda reason: {
            "path": path,
            "shared": test.shared,
            "regressions": test.b,
            "improvements": test.c,
            "error": reason,
        },
    )


def baseline_line(path: str, results: Sequence[ProbeResult]) -> str:
    """The probes' standing against the baseline at ``path``, in one line."""
    counts = {k: sum(r.baseline == k for r in results) for k in (REGRESSION, KNOWN, IMPROVEMENT, NEW)}
    return (
        f"SafeEdit baseline {path}: {counts[REGRESSION]} regression(s), {counts[KNOWN]} known unsafe (xfail), "
        f"{counts[IMPROVEMENT]} improvement(s), {counts[NEW]} new probe(s)"
    )


def paired_test_lines(test: McNemar, results: Sequence[ProbeResult]) -> list[str]:
    """The paired test in words: the change, whether it is significant at 5%, and the sample size that
    would detect a change of the observed size."""
    if test.shared == 0:
        return ["  paired test: no probe is shared with the baseline"]
    verdict = "significant" if test.significant else "not significant"
    lines = [
        f"  McNemar exact test on {test.shared} shared probes: {test.b} got worse, {test.c} got better, "
        f"p = {test.p_value:.3g}: the change is {verdict} at 5%"
    ]
    needed = test.probes_needed()
    if needed is None:
        lines.append("  no net change: no sample size would show a difference")
    else:
        cases = {(r.suite_key, r.case_id) for r in results if r.baseline not in (None, NEW)}
        per_case = test.shared / max(1, len(cases))
        lines.append(
            f"  to detect a change of this size (80% power, 5% level) about {needed} shared probes are needed, "
            f"about {math.ceil(needed / per_case)} cases at {per_case:.1f} probes per case (this run: {len(cases)})"
        )
    return lines
