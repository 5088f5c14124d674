"""One self-contained HTML report for people: a header with the verdict, a category x probe heat map, the
side effects, and a drill-down per case. No scripts, no external files; model output escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from pytest_safeedit.cases.categories import BENIGN_PROBE
from pytest_safeedit.results.probes import PassRate, ProbeResult, attack_results, pass_rate
from pytest_safeedit.results.repair import REPAIR_HEADERS, RepairOutcome, repair_lines, repair_table
from pytest_safeedit.results.summary import (
    TOTAL,
    is_edited,
    judge_lines,
    ordered_categories,
    ordered_probes,
    side_effects,
)
from pytest_safeedit.util.files import atomic_write

STYLE = """
body{font-family:system-ui,sans-serif;margin:1em 1.5em;color:#222;font-size:14px}
h1{font-size:1.3em;margin:.2em 0} h2{font-size:1.1em;margin:1.2em 0 .4em}
.head{display:flex;flex-wrap:wrap;gap:.4em 1.5em;align-items:baseline;margin-bottom:.6em}
.meta{color:#555} .pass{color:#1a7f37} .fail{color:#cf222e}
.big{font-size:1.6em;font-weight:600} .gate{font-weight:600;padding:.1em .5em;border-radius:4px}
.gate.pass{background:#dafbe1} .gate.fail{background:#ffebe9} .gate.none{background:#eee;color:#555}
table{border-collapse:collapse} td,th{border:1px solid #fff;padding:2px 5px}
table.heat td{text-align:center;min-width:4.2em;line-height:1.15}
table.heat th{background:#f6f8fa;font-weight:600;text-align:center}
table.heat th.row{text-align:left;white-space:nowrap}
table.heat td small{display:block;color:#333;font-size:.75em}
table.plain td,table.plain th{border:1px solid #ddd;text-align:left}
.na{background:#f6f8fa;color:#999}
details{border:1px solid #ddd;border-radius:4px;margin:.3em 0;padding:.3em .6em}
summary{cursor:pointer} pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:.5em;margin:.2em 0}
"""


def _colour(rate: float) -> str:
    """Red at 0, amber at 50, green at 100 (light, so that the numbers stay readable)."""
    return f"hsl({1.2 * rate:.0f},70%,{78 if 20 < rate < 80 else 82}%)"


def _cell(rate: PassRate | None) -> str:
    if rate is None:
        return '<td class="na">-</td>'
    low, high = rate.interval
    return (
        f'<td style="background:{_colour(rate.rate)}" title="{rate.passed}/{rate.total} passed">'
        f"{rate.rate:.1f}<small>[{low:.0f}-{high:.0f}]</small></td>"
    )


def _rates(results: Sequence[ProbeResult], category: str, probe: str) -> PassRate | None:
    members = [r for r in results if category == TOTAL or r.category == category]
    if probe == TOTAL:
        return pass_rate(attack_results(members))
    return pass_rate(r for r in members if r.probe == probe)


def heat_map(results: Sequence[ProbeResult]) -> str:
    """Category x probe pass rates, coloured, with their 95% intervals; unedited and edited side by side."""
    edited = is_edited(results)
    before = [r.before() for r in results]
    probes = ordered_probes(results) + [TOTAL]
    if any(not r.is_attack for r in results):
        probes.append(BENIGN_PROBE)
    sides = [("unedited", before), ("edited", list(results))] if edited else [("", list(results))]
    head = "".join(f'<th colspan="{len(sides)}">{escape(p)}</th>' for p in probes)
    rows = [f'<tr><th class="row">category</th>{head}</tr>']
    if edited:
        rows.append("<tr><th></th>" + "".join(f"<th>{escape(s)}</th>" for p in probes for s, _ in sides) + "</tr>")
    for category in [*ordered_categories(results), TOTAL]:
        cells = "".join(_cell(_rates(members, category, p)) for p in probes for _, members in sides)
        rows.append(f'<tr><th class="row">{escape(category)}</th>{cells}</tr>')
    return f'<table class="heat">{"".join(rows)}</table>'


def _header(results: Sequence[ProbeResult], meta: Mapping[str, Any], gate_failures: list[str] | None) -> str:
    model = meta.get("model", {}) or {}
    total = pass_rate(attack_results(results))
    edited = is_edited(results)
    parts = ['<div class="head"><h1>SafeEdit safety report</h1>']
    if total is not None:
        low, high = total.interval
        before = pass_rate(attack_results([r.before() for r in results])) if edited else None
        prefix = f"{before.rate:.1f}% &rarr; " if before is not None else ""
        parts.append(
            f'<span class="big">{prefix}{total.rate:.1f}%</span>'
            f'<span class="meta">attack pass rate, 95% interval [{low:.1f}, {high:.1f}], '
            f"{total.passed}/{total.total} safe</span>"
        )
    gate = meta.get("gate") or {}
    if gate_failures is None:
        parts.append('<span class="gate none">no gate</span>')
    elif gate_failures:
        parts.append(f'<span class="gate fail">gate failed ({len(gate_failures)})</span>')
    else:
        parts.append('<span class="gate pass">gate passed</span>')
    parts.append("</div>")
    parts.append(
        f'<p class="meta">model <b>{escape(str(model.get("model")))}</b> · judge {escape(str(meta.get("judge")))} · '
        f"editor {escape(str(meta.get('editor')))} · {len(results)} probes"
        + (f" · gated on {escape(str(gate.get('on', 'point')))}" if gate_failures is not None else "")
        + "</p>"
    )
    parts.extend(f'<p class="meta">{escape(line)}</p>' for line in judge_lines(results, str(meta.get("judge"))))
    if gate_failures:
        parts.append("<ul>" + "".join(f'<li class="fail">{escape(f)}</li>' for f in gate_failures) + "</ul>")
    return "".join(parts)


def _side_effects(results: Sequence[ProbeResult]) -> str:
    if not is_edited(results):
        return ""
    table = side_effects(results)
    routed = any("probe_accuracy" in s for s in table.values())
    heads = ["category", "knowledge kept", "harmless consistent", "fluency before &rarr; after", "edit s"]
    heads += ["probe acc %", "harmless routed %"] if routed else []
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"]
    for category, s in table.items():
        kept = f"{s['knowledge_kept']}/{s['knowledge_total']}" if s["knowledge_total"] else "-"
        total = s["harmless_total"]
        harmless = f"{s['harmless_kept']}/{total} ({s['harmless_consistency']}%)" if total else "-"
        fluency = f"{s['fluency_before']} &rarr; {s['fluency_after']}" if s["fluency_before"] is not None else "-"
        cells = [escape(category), kept, harmless, fluency, escape(str(s["edit_seconds"]))]
        cells += [escape(str(s.get("probe_accuracy"))), escape(str(s.get("harmless_routed")))] if routed else []
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<h2>Side effects of the edits</h2><table class="plain">{"".join(rows)}</table>'


def _repair(meta: Mapping[str, Any]) -> str:
    """The repair's table (``--safeedit-repair``), every cell escaped; empty without a repair."""
    data = meta.get("repair")
    if not isinstance(data, Mapping):
        return ""
    outcome = RepairOutcome.from_dict(data)
    lines = repair_lines(outcome)
    head = "".join(f'<p class="meta">{escape(line)}</p>' for line in lines[:2])
    if outcome.error or outcome.note or not outcome.results:
        return f"<h2>Repair</h2>{head}" + "".join(f"<p>{escape(line)}</p>" for line in lines[2:])
    rows = ["<tr>" + "".join(f"<th>{escape(h)}</th>" for h in REPAIR_HEADERS) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in repair_table(outcome)]
    head += f'<p class="meta">{escape(lines[2])}</p>'
    return f'<h2>Repair: unedited &rarr; repaired</h2>{head}<table class="plain">{"".join(rows)}</table>'


def _verdict(passed: bool, label: str, score: float) -> str:
    return f'<span class="{"pass" if passed else "fail"}">{escape(label)} ({score:.2f})</span>'


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
        parts.append(f"<h3>{escape(r.probe)}: {_verdict(r.passed, r.verdict.label, r.verdict.score)}</h3>")
        parts.append(f"<p>input</p><pre>{escape(r.input)}</pre><p>response</p><pre>{escape(r.response)}</pre>")
        if r.before_verdict is not None and r.before_response is not None:
            b = r.before_verdict
            parts.append(
                f"<p>unedited: {_verdict(b.passed, b.label, b.score)}</p><pre>{escape(r.before_response)}</pre>"
            )
    parts.append("</details>")
    return "".join(parts)


def html_report(results: Sequence[ProbeResult], meta: Mapping[str, Any], gate_failures: list[str] | None) -> str:
    cases: dict[tuple[str, str], list[ProbeResult]] = {}
    for r in results:
        cases.setdefault((r.suite_key, r.case_id), []).append(r)
    drill = "".join(_case(case_id, members) for (_, case_id), members in cases.items())
    legend = (
        '<p class="meta">pass rate in % (100 x (1 - mean label)), its 95% Wilson interval below; '
        "red 0, green 100; <i>all</i> covers the attack probes, <i>benign</i> the harmless questions answered</p>"
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>SafeEdit report</title>'
        f"<style>{STYLE}</style></head><body>{_header(results, meta, gate_failures)}"
        f"{heat_map(results)}{legend}{_side_effects(results)}{_repair(meta)}<h2>Cases</h2>{drill}</body></html>\n"
    )


def write_html(
    path: str, results: Sequence[ProbeResult], meta: Mapping[str, Any], gate_failures: list[str] | None
) -> None:
    atomic_write(Path(path), html_report(results, meta, gate_failures))
