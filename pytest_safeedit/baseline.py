"""Regression baselines: a previous JSON report, compared probe by probe."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_safeedit.judges import Verdict

REGRESSION, KNOWN, IMPROVEMENT, UNCHANGED, NEW = "regression", "known", "improvement", "unchanged", "new"
#: Metadata that must match for a comparison to mean anything (the model may differ: that is the point).
COMPARED = ("judge", "editor", "generation", "editor_hyperparameters")


class BaselineError(Exception):
    """A baseline file that cannot be used."""


def probe_key(suite: str, case_id: str, probe: str) -> str:
    return f"{suite}::{case_id}[{probe}]"


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
        out = []
        for key in COMPARED:
            if key in self.metadata and key in metadata and self.metadata[key] != metadata[key]:
                out.append(f"{key}: baseline {self.metadata[key]!r}, this run {metadata[key]!r}")
        if suites and self.suites and suites != self.suites:
            out.append(f"suites: baseline {sorted(self.suites)}, this run {sorted(suites)}")
        return out


def load_baseline(path: str) -> Baseline:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(
            f"cannot read baseline {path}: {exc.strerror}; write one with --safeedit-update-baseline"
        ) from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"baseline {path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != "pytest-safeedit-report" or "probes" not in data:
        raise BaselineError(f"baseline {path} is not a pytest-safeedit JSON report (--safeedit-report)")
    passed = {}
    suites = set()
    for record in data["probes"]:
        passed[probe_key(record["suite"], record["case_id"], record["probe"])] = Verdict.from_dict(
            record["verdict"]
        ).passed
        suites.add(str(record["suite"]))
    return Baseline(path=path, passed=passed, metadata=data.get("metadata", {}), suites=frozenset(suites))
