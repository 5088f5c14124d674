"""``python -m pytest_safeedit merge``: merge the JSON reports of shards into one report and one gate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_safeedit.cases.thresholds import GATE_ON, Gate, gate_from_pairs
from pytest_safeedit.plugin.options import named_rate, rate_value
from pytest_safeedit.reports.baseline import (
    PER_SUITE,
    baseline_line,
    comparison_metadata,
    fails_run,
    paired_test,
    paired_test_lines,
    setup_differences,
)
from pytest_safeedit.reports.json_report import ReportError, read_report, write_json_report
from pytest_safeedit.results.gate import gate_failures
from pytest_safeedit.results.probes import ProbeResult
from pytest_safeedit.results.summary import gate_lines, summary_sections


class MergeError(Exception):
    """Reports that cannot be merged."""


def baseline_comparison(
    baselines: Mapping[str, str | None], results: Sequence[ProbeResult]
) -> tuple[dict[str, Any] | None, str | None]:
    """The paired test over all merged probes against the baseline every shard compared with (by shard
    report: that baseline's path, or None), or None and a note saying why there is none to recompute."""
    paths = set(baselines.values())
    if paths == {None}:
        return None, None
    if len(paths) == 1:
        (path,) = paths
        assert path is not None
        return comparison_metadata(path, results), None
    compared = ", ".join(f"{report}: {path or 'none'}" for report, path in baselines.items())
    note = (
        f"the shards were not all compared with one baseline ({compared}), so the merged report has no "
        "comparison with a baseline; run every shard with the same --safeedit-baseline"
    )
    return None, note


def load_reports(paths: Sequence[str]) -> tuple[list[ProbeResult], dict[str, Any]]:
    """All probes of the reports and their metadata: the first report's, with the baseline comparison
    recomputed over all probes; the reports must come from one setup."""
    results: list[ProbeResult] = []
    seen: dict[str, str] = {}
    first: dict[str, Any] | None = None
    baselines: dict[str, str | None] = {}
    for path in paths:
        try:
            report = read_report(path)
        except ReportError as exc:
            raise MergeError(str(exc)) from None
        meta = report.metadata
        compared = meta.get("baseline_comparison")
        baselines[path] = str(compared["path"]) if isinstance(compared, Mapping) and compared.get("path") else None
        if first is None:
            first = dict(meta)
        else:
            differences = setup_differences(first, meta)
            model, other_model = (first.get("model") or {}).get("model"), (meta.get("model") or {}).get("model")
            if model != other_model:
                differences.append(f"model: {model!r} vs {other_model!r}")
            if differences:
                raise MergeError(f"{path} comes from another setup than {paths[0]}: " + "; ".join(differences))
            for key in PER_SUITE:
                if isinstance(first.get(key), dict) and isinstance(meta.get(key), dict):
                    first[key] = {**meta[key], **first[key]}
        for result in report.results:
            if result.key in seen:
                raise MergeError(
                    f"probe {result.key} is in both {seen[result.key]} and {path}; were the shards overlapping?"
                )
            seen[result.key] = path
            results.append(result)
    assert first is not None
    first.pop("baseline_comparison_note", None)
    first["baseline_comparison"], note = baseline_comparison(baselines, results)
    if note:
        first["baseline_comparison_note"] = note
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
    parser.add_argument(
        "--min-judge-agreement", type=rate_value, metavar="RATE", help="gate: least judge-check agreement (0-1)"
    )
    parser.add_argument(
        "--gate-on",
        choices=GATE_ON,
        help="gate on the pass rate (point) or the lower bound of its 95%% interval (lower); default: as recorded",
    )
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
    on = args.gate_on or recorded.on
    gate = gate_from_pairs(
        args.min_pass_rate, args.min_category_rate, args.min_probe_rate, on, args.min_judge_agreement
    ).merged_over(recorded)
    failures = gate_failures(gate, results) if gate.configured else None
    model = (meta.get("model") or {}).get("model")
    for title, lines in summary_sections(
        results, model=model, judge=str(meta.get("judge")), editor=str(meta.get("editor"))
    ):
        print(f" {title} ".center(80, "="))
        print("\n".join(lines))
    comparison = meta.get("baseline_comparison")
    if comparison:
        print(baseline_line(str(comparison["path"]), results))
        try:
            print("\n".join(paired_test_lines(paired_test(results), results)))
        except Exception as exc:  # already a warning when the report's comparison was computed
            print(f"  paired test: could not be computed ({type(exc).__name__}: {exc})")
    if meta.get("baseline_comparison_note"):
        print(f"merge: note: {meta['baseline_comparison_note']}", file=sys.stderr)
    meta = {**meta, "gate": gate.to_dict(), "shard": None, "merged_from": list(args.reports)}
    if args.report:
        write_json_report(args.report, results, meta)
    if args.report_md:
        from pytest_safeedit.reports.markdown_report import write_markdown

        write_markdown(args.report_md, results, meta, failures)
    if args.report_html:
        from pytest_safeedit.reports.html_report import write_html

        write_html(args.report_html, results, meta, failures)
    for line in gate_lines(failures, gate):
        print(line)
    if failures is None:
        # As an unsharded run: probes already unsafe in the baseline are xfail and do not fail it.
        return 1 if any(fails_run(r) for r in results) else 0
    return 1 if failures else 0
