"""Merging shard reports: the baseline comparison describes the merged probes, not the first shard's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.cli.merge import main
from pytest_safeedit.judges.base import Verdict
from pytest_safeedit.reports.baseline import IMPROVEMENT, KNOWN, NEW, REGRESSION, UNCHANGED, paired_test
from pytest_safeedit.reports.json_report import write_json_report
from pytest_safeedit.results.probes import ProbeResult

SAFE, UNSAFE = Verdict("safe", 0.05), Verdict("unsafe", 0.95)


def probe(case: str, status: str | None) -> ProbeResult:
    verdict = UNSAFE if status in (REGRESSION, KNOWN) else SAFE
    return ProbeResult("s", case, "offensiveness", "DS", "in", "out", verdict, suite_key="s.yaml", baseline=status)


def shard(path: Path, statuses: list[str | None], baseline: str | None, name: str) -> str:
    results = [probe(f"{name}-{i}", s) for i, s in enumerate(statuses)]
    meta: dict[str, Any] = {"judge": "default", "editor": "none", "model": {"model": "m"}, "shard": [1, 2]}
    meta["baseline_comparison"] = None if baseline is None else {"path": baseline, **paired_test(results).to_dict()}
    write_json_report(str(path / f"{name}.json"), results, meta)
    return str(path / f"{name}.json")


ONE = [REGRESSION, UNCHANGED, UNCHANGED]
TWO = [IMPROVEMENT, IMPROVEMENT, IMPROVEMENT, IMPROVEMENT, IMPROVEMENT, IMPROVEMENT, KNOWN, NEW]


def merged(tmp_path: Path, *reports: str) -> dict[str, Any]:
    main([*reports, "--report", str(tmp_path / "merged.json")])
    data: dict[str, Any] = json.loads((tmp_path / "merged.json").read_text())["metadata"]
    return data


def test_a_merged_report_compares_all_its_probes_with_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = shard(tmp_path, ONE, "base.json", "one"), shard(tmp_path, TWO, "base.json", "two")
    comparison = merged(tmp_path, one, two)["baseline_comparison"]
    assert comparison["path"] == "base.json"
    assert (comparison["shared"], comparison["regressions"], comparison["improvements"]) == (10, 1, 6)
    every = [probe(f"x{i}", s) for i, s in enumerate(ONE + TWO)]
    assert comparison == {"path": "base.json", **paired_test(every).to_dict()}
    assert comparison["p_value"] == pytest.approx(0.125)  # shard one alone: 1.0; shard two alone: 0.03125
    out = capsys.readouterr().out
    assert "SafeEdit baseline base.json: 1 regression(s), 1 known unsafe (xfail), 6 improvement(s), 1 new" in out
    assert "McNemar exact test on 10 shared probes: 1 got worse, 6 got better" in out


def test_shards_compared_with_different_baselines_drop_the_comparison_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = shard(tmp_path, ONE, "base.json", "one"), shard(tmp_path, TWO, "other.json", "two")
    meta = merged(tmp_path, one, two)
    assert meta["baseline_comparison"] is None
    note = meta["baseline_comparison_note"]
    assert "base.json" in note and "other.json" in note
    assert note in capsys.readouterr().err
    three = shard(tmp_path, [None], None, "three")
    meta = merged(tmp_path, one, three)
    assert meta["baseline_comparison"] is None and "none" in meta["baseline_comparison_note"]


def test_shards_without_a_baseline_merge_without_a_comparison(tmp_path: Path) -> None:
    meta = merged(tmp_path, shard(tmp_path, [None], None, "one"), shard(tmp_path, [None, None], None, "two"))
    assert meta["baseline_comparison"] is None and "baseline_comparison_note" not in meta
