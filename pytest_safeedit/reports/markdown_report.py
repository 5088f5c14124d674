"""The Markdown summary, sized for a pull-request comment."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_safeedit.results.probes import REGRESSION, ProbeResult
from pytest_safeedit.results.repair import REPAIR_HEADERS, RepairOutcome, repair_lines, repair_table
from pytest_safeedit.results.summary import is_edited, judge_lines, pass_rate_table, side_effects_table, total_lines
from pytest_safeedit.util.files import atomic_write
from pytest_safeedit.util.text import shorten

MAX_FAILURES = 10
FENCE, SAFE_FENCE = "`" * 3, "'" * 3


def md_text(text: str, limit: int = 160) -> str:
    """Untrusted text made inert in Markdown: HTML-escaped, one line, no table or code breaks."""
    flat = " ".join(shorten(text, limit).split())
    # Quotes are plain text in Markdown; only markup characters need escaping.
    escaped = html.escape(flat, quote=False)
    for char in "\\`*_[]|#<>!":
        escaped = escaped.replace(char, "\\" + char)
    return escaped


def markdown_summary(results: Sequence[ProbeResult], meta: dict[str, Any], gate_failures: list[str] | None) -> str:
    model = meta.get("model", {}) or {}
    lines = [
        "## SafeEdit safety report",
        "",
        f"Model `{md_text(str(model.get('model')), 80)}` · judge `{md_text(str(meta.get('judge')), 60)}` · "
        f"editor `{md_text(str(meta.get('editor')), 40)}` · {len(results)} probes",
        "",
    ]
    if gate_failures is not None:
        on = md_text(str((meta.get("gate") or {}).get("on", "point")), 20)
        if gate_failures:
            lines.append(f"**Gate: failed** ({len(gate_failures)} thresholds missed; gated on {on})")
            lines.extend(f"- {md_text(f, 200)}" for f in gate_failures)
        else:
            lines.append(f"**Gate: passed** (gated on {on})")
        lines.append("")
    check = judge_lines(results, str(meta.get("judge")))
    lines += [md_text(line, 300) for line in total_lines(results) + check] + [""]
    table = pass_rate_table(results, intervals=True).replace(FENCE, SAFE_FENCE)
    lines += ["Pass rates with their 95% Wilson intervals:", "", FENCE, table, FENCE, ""]
    if is_edited(results):
        lines += ["Side effects", "", FENCE, side_effects_table(results).replace(FENCE, SAFE_FENCE), FENCE, ""]
    lines += _repair(meta)
    failed = [r for r in results if not r.passed]
    if failed:
        lines += [
            f"<details><summary>{len(failed)} failing probes (first {min(len(failed), MAX_FAILURES)})</summary>",
            "",
        ]
        lines += ["| probe | category | verdict | response |", "|---|---|---|---|"]
        for r in failed[:MAX_FAILURES]:
            flag = " (regression)" if r.baseline == REGRESSION else ""
            lines.append(
                f"| {md_text(r.case_id, 60)}\\[{r.probe}\\]{flag} | {md_text(r.category, 40)} | "
                f"{r.verdict.label} {r.verdict.score:.2f} | {md_text(r.response)} |"
            )
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def _repair(meta: dict[str, Any]) -> list[str]:
    """The repair's table (``--safeedit-repair``); nothing without a repair."""
    data = meta.get("repair")
    if not isinstance(data, dict):
        return []
    outcome = RepairOutcome.from_dict(data)
    lines = repair_lines(outcome)
    out = ["Repair: unedited -> repaired", ""] + [md_text(line, 300) + "  " for line in lines[:2]] + [""]
    if outcome.error or outcome.note or not outcome.results:
        return out + [md_text(line, 300) for line in lines[2:]] + [""]
    out += [md_text(lines[2], 300), ""]
    out += ["| " + " | ".join(REPAIR_HEADERS) + " |", "|" + "---|" * len(REPAIR_HEADERS)]
    out += ["| " + " | ".join(md_text(cell, 60) for cell in row) + " |" for row in repair_table(outcome)]
    return out + [""]


def write_markdown(
    path: str, results: Sequence[ProbeResult], meta: dict[str, Any], gate_failures: list[str] | None
) -> None:
    atomic_write(Path(path), markdown_summary(results, meta, gate_failures))
