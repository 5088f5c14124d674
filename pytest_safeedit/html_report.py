"""One self-contained HTML report: per-category bar charts and a drill-down per case."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from pytest_safeedit.categories import BENIGN_PROBE
from pytest_safeedit.files import atomic_write
from pytest_safeedit.judges import Verdict
from pytest_safeedit.results import PassRate, ProbeResult, pass_rate
from pytest_safeedit.summary import TOTAL, is_edited, ordered_categories, ordered_probes

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.5em}
.meta{color:#555} .pass{color:#1a7f37} .fail{color:#cf222e}
.chart{display:grid;grid-template-columns:9em 1fr 4em;gap:2px 8px;align-items:center;margin:.3em 0 1em}
.bar{height:.8em;background:#eee;position:relative}
.bar span{position:absolute;left:0;top:0;bottom:0}
.before span{background:#9ba3af} .after span{background:#2f81f7}
details{border:1px solid #ddd;border-radius:4px;margin:.3em 0;padding:.3em .6em}
summary{cursor:pointer} pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:.5em}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
"""


def _bar(label: str, rate: PassRate | None, kind: str) -> str:
    value = 0.0 if rate is None else rate.rate
    text = "-" if rate is None else f"{value:.1f}"
    return (
        f'<div>{escape(label)}</div><div class="bar {kind}"><span style="width:{value:.1f}%"></span></div>'
        f"<div>{text}</div>"
    )


def _chart(category: str, results: Sequence[ProbeResult], edited: bool) -> str:
    rows = []
    members = [r for r in results if category == TOTAL or r.category == category]
    for probe in ordered_probes(members) + ([BENIGN_PROBE] if any(not r.is_attack for r in members) else []):
        group = [r for r in members if r.probe == probe]
        if edited:
            rows.append(_bar(f"{probe} unedited", pass_rate(r.before() for r in group), "before"))
        rows.append(_bar(f"{probe}{' edited' if edited else ''}", pass_rate(group), "after"))
    return f'<h2>{escape(category)}</h2><div class="chart">{"".join(rows)}</div>'


def _verdict(label: str, score: float) -> str:
    css = "pass" if Verdict(label, score).passed else "fail"
    return f'<span class="{css}">{escape(label)} ({score:.2f})</span>'


def _case(case_id: str, results: Sequence[ProbeResult]) -> str:
    first = results[0]
    failed = sum(not r.passed for r in results)
    parts = [
        f"<details><summary>{escape(case_id)} · {escape(first.category)} · "
        f"{len(results) - failed}/{len(results)} passed</summary>"
    ]
    if first.edit:
        e = first.edit
        parts.append(
            f"<p>edit: {escape(str(e.editor))}, layer {escape(str(e.layer))} "
            f"({escape(str(e.module))}), {escape(str(e.steps))} steps, "
            f"losses {escape(str(e.losses))}</p>"
        )
    for r in results:
        parts.append(f"<h3>{escape(r.probe)}: {_verdict(r.verdict.label, r.verdict.score)}</h3>")
        parts.append(f"<p>input</p><pre>{escape(r.input)}</pre><p>response</p><pre>{escape(r.response)}</pre>")
        if r.before_verdict is not None and r.before_response is not None:
            parts.append(
                f"<p>unedited: {_verdict(r.before_verdict.label, r.before_verdict.score)}</p>"
                f"<pre>{escape(r.before_response)}</pre>"
            )
    parts.append("</details>")
    return "".join(parts)


def html_report(results: Sequence[ProbeResult], meta: dict[str, Any], gate_failures: list[str] | None) -> str:
    edited = is_edited(results)
    model = meta.get("model", {}) or {}
    head = (
        f'<p class="meta">model {escape(str(model.get("model")))} · judge {escape(str(meta.get("judge")))} · '
        f"editor {escape(str(meta.get('editor')))} · {len(results)} probes</p>"
    )
    gate = ""
    if gate_failures is not None:
        if gate_failures:
            items = "".join(f"<li>{escape(f)}</li>" for f in gate_failures)
            gate = f'<p class="fail"><b>Gate failed</b></p><ul>{items}</ul>'
        else:
            gate = '<p class="pass"><b>Gate passed</b></p>'
    charts = "".join(_chart(c, results, edited) for c in [*ordered_categories(results), TOTAL])
    cases: dict[tuple[str, str], list[ProbeResult]] = {}
    for r in results:
        cases.setdefault((r.suite_key, r.case_id), []).append(r)
    drill = "".join(_case(case_id, members) for (_, case_id), members in cases.items())
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>SafeEdit report</title>'
        f"<style>{STYLE}</style></head><body><h1>SafeEdit safety report</h1>{head}{gate}"
        f"<h2>Pass rates by category</h2>{charts}<h2>Cases</h2>{drill}</body></html>\n"
    )


def write_html(
    path: str, results: Sequence[ProbeResult], meta: dict[str, Any], gate_failures: list[str] | None
) -> None:
    atomic_write(Path(path), html_report(results, meta, gate_failures))
