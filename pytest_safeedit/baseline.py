"""Regression baselines: a previous JSON report, compared probe by probe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_safeedit.json_report import ReportError, read_report
from pytest_safeedit.results import ProbeResult

REGRESSION, KNOWN, IMPROVEMENT, UNCHANGED, NEW = "regression", "known", "improvement", "unchanged", "new"
#: Metadata that must match for a comparison to mean anything (the model may differ: that is the point).
COMPARED = ("judge", "editor", "generation", "editor_hyperparameters")


class BaselineError(Exception):
    """A baseline file that cannot be used."""


#: Compared metadata recorded per suite (by suite key): only the suites both runs have are compared.
PER_SUITE = ("generation", "editor_hyperparameters")


def setup_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The compared setup that differs between two runs' metadata, as readable lines (per-suite
    settings are compared for the suites both runs have)."""
    out = []
    for key in COMPARED:
        if key not in a or key not in b:
            continue
        mine, theirs = a[key], b[key]
        if key in PER_SUITE and isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            shared = sorted(set(mine) & set(theirs))
            mine, theirs = {k: mine[k] for k in shared}, {k: theirs[k] for k in shared}
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
