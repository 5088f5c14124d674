"""``python -m pytest_safeedit merge``: merge the JSON reports of shards into one report and one gate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_safeedit.baseline import COMPARED, probe_key
from pytest_safeedit.gate import Gate, gate_from_pairs, named_rate, rate_value
from pytest_safeedit.report import gate_lines, summary_sections, write_json_report
from pytest_safeedit.results import ProbeResult


class MergeError(Exception):
    """Reports that cannot be merged."""


def load_reports(paths: Sequence[str]) -> tuple[list[ProbeResult], dict[str, Any]]:
    """All probes of the reports and the first report's metadata; the reports must come from one setup."""
    results: list[ProbeResult] = []
    seen: dict[str, str] = {}
    first: dict[str, Any] | None = None
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise MergeError(f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise MergeError(f"{path} is not JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("schema") != "pytest-safeedit-report":
            raise MergeError(f"{path} is not a pytest-safeedit JSON report (--safeedit-report)")
        meta = data.get("metadata", {})
        if first is None:
            first = meta
        else:
            for key in (*COMPARED, "model"):
                mine = (meta.get(key) or {}).get("model") if key == "model" else meta.get(key)
                theirs = (first.get(key) or {}).get("model") if key == "model" else first.get(key)
                if mine != theirs:
                    raise MergeError(f"{path} differs from {paths[0]} in {key}: {mine!r} vs {theirs!r}")
        for record in data.get("probes", []):
            result = ProbeResult.from_dict(record)
            key = probe_key(result.suite, result.case_id, result.probe)
            if key in seen:
                raise MergeError(f"probe {key} is in both {seen[key]} and {path}; were the shards overlapping?")
            seen[key] = path
            results.append(result)
    assert first is not None
    return results, first


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_safeedit merge",
        description="Merge the JSON reports of shards (--safeedit-shard I/N) into one table, report and gate.",
    )
    parser.add_argument("reports", nargs="+", metavar="REPORT", help="JSON reports written with --safeedit-report")
    parser.add_argument("--min-pass-rate", type=rate_value, metavar="RATE", help="gate: least total pass rate (0-1)")
    parser.add_argument("--min-category-rate", type=named_rate, action="append", default=[], metavar="CATEGORY=RATE")
    parser.add_argument("--min-probe-rate", type=named_rate, action="append", default=[], metavar="PROBE=RATE")
    parser.add_argument("--report", metavar="PATH", help="write the merged JSON report")
    parser.add_argument("--report-md", metavar="PATH", help="write the merged Markdown summary")
    parser.add_argument("--report-html", metavar="PATH", help="write the merged HTML report")
    args = parser.parse_args(argv)
    try:
        results, meta = load_reports(args.reports)
    except MergeError as exc:
        print(f"merge: error: {exc}", file=sys.stderr)
        return 2
    recorded = Gate(**meta["gate"]) if meta.get("gate") else Gate()
    gate = gate_from_pairs(args.min_pass_rate, args.min_category_rate, args.min_probe_rate).merged_over(recorded)
    failures = gate.check(results) if gate.configured else None
    model = (meta.get("model") or {}).get("model")
    for title, lines in summary_sections(
        results, model=model, judge=str(meta.get("judge")), editor=str(meta.get("editor"))
    ):
        print(f" {title} ".center(80, "="))
        print("\n".join(lines))
    meta = {**meta, "gate": gate.to_dict(), "shard": None, "merged_from": list(args.reports)}
    if args.report:
        write_json_report(args.report, results, meta)
    if args.report_md:
        from pytest_safeedit.markdown import write_markdown

        write_markdown(args.report_md, results, meta, failures)
    if args.report_html:
        from pytest_safeedit.html import write_html

        write_html(args.report_html, results, meta, failures)
    for line in gate_lines(failures, gate.thresholds()):
        print(line)
    if failures is None:
        return 0 if all(r.passed for r in results) else 1
    return 1 if failures else 0
