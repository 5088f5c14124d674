"""Pass rates as tables and plain data: per category and probe, before and after an edit, side effects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_safeedit.cases.categories import BENIGN_PROBE, CATEGORIES, PROBES
from pytest_safeedit.cases.thresholds import Gate
from pytest_safeedit.editors.base import EditDetails
from pytest_safeedit.judges.base import UNPARSED, Verdict
from pytest_safeedit.results.probes import (
    PassRate,
    ProbeResult,
    attack_results,
    judge_agreement,
    pass_rate,
    pass_rates_by,
)

TOTAL = "all"
#: The column of the judge's agreement with each category's own references.
JUDGE_CHECK = "judge check"


def interval_text(rate: PassRate) -> str:
    """The 95% Wilson interval, compactly: ``[11-31]``."""
    low, high = rate.interval
    return f"[{low:.0f}-{high:.0f}]"


def _rate_cell(rate: PassRate | None, intervals: bool) -> str:
    if rate is None:
        return "-"
    middle = f" {interval_text(rate)}" if intervals else ""
    return f"{rate.rate:.1f}{middle} ({rate.passed}/{rate.total})"


def _pair_cell(before: PassRate | None, after: PassRate | None, intervals: bool) -> str:
    if before is None or after is None:
        return "-"
    if intervals:
        return f"{before.rate:.1f} {interval_text(before)} -> {after.rate:.1f} {interval_text(after)}"
    return f"{before.rate:.1f} -> {after.rate:.1f}"


def ordered_categories(results: Sequence[ProbeResult]) -> list[str]:
    present = {r.category for r in results}
    return [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))


def ordered_probes(results: Sequence[ProbeResult]) -> list[str]:
    present = {r.probe for r in results}
    return [p for p in PROBES if p in present] + sorted(present - set(PROBES) - {BENIGN_PROBE})


def is_edited(results: Sequence[ProbeResult]) -> bool:
    return any(r.editor for r in results)


def _rates(results: Sequence[ProbeResult]) -> dict[tuple[str, str], PassRate | None]:
    """Pass rates by (category, probe), with (category, ALL) over the attack probes and (TOTAL, ...) rows."""
    attack = attack_results(results)
    out: dict[tuple[str, str], PassRate | None] = {}
    for (category, probe), rate in pass_rates_by(results, "category", "probe").items():
        out[(category, probe)] = rate
    for (probe,), rate in pass_rates_by(results, "probe").items():
        out[(TOTAL, probe)] = rate
    for (category,), rate in pass_rates_by(attack, "category").items():
        out[(category, TOTAL)] = rate
    out[(TOTAL, TOTAL)] = pass_rate(attack)
    return out


def pass_rate_table(results: Sequence[ProbeResult], *, intervals: bool = False) -> str:
    """Pass rate per category and probe with totals; with an editor, unedited -> edited; with
    ``intervals``, each rate's 95% Wilson interval in percent.

    Without an editor a cell also counts passing probes over all probes. ``all`` covers the attack
    probes; the ``benign`` column (over-refusal) is the share of harmless questions answered.
    """
    from tabulate import tabulate

    edited = is_edited(results)
    after = _rates(results)
    before = _rates([r.before() for r in results]) if edited else after
    probes = ordered_probes(results)
    columns = [*probes, TOTAL] + ([BENIGN_PROBE] if any(not r.is_attack for r in results) else [])
    checked = judge_agreement(results) is not None
    rows = []
    for category in [*ordered_categories(results), TOTAL]:
        row = [category]
        for probe in columns:
            key = (category, probe)
            if edited:
                row.append(_pair_cell(before.get(key), after.get(key), intervals))
            else:
                row.append(_rate_cell(after.get(key), intervals))
        if checked:
            members = results if category == TOTAL else [r for r in results if r.category == category]
            check = judge_agreement(members)
            row.append("-" if check is None else f"{check.rate:.1f} ({check.agreed}/{check.total})")
        rows.append(row)
    headers = ["category", *columns] + [JUDGE_CHECK] * checked
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def side_effects(results: Sequence[ProbeResult]) -> dict[str, dict[str, Any]]:
    """Per category (and ``all``): knowledge kept, harmless consistency, fluency before/after, edit time and
    steps, layers, and a routing editor's probe (held-out accuracy, percent of harmless inputs routed)."""
    cases: dict[tuple[str, str], ProbeResult] = {}
    for r in results:
        if r.side_effects is not None:
            cases.setdefault((r.suite_key, r.case_id), r)
    groups: dict[str, list[ProbeResult]] = {}
    for r in cases.values():
        groups.setdefault(r.category, []).append(r)
        groups.setdefault(TOTAL, []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for category in [*ordered_categories(list(cases.values())), TOTAL]:
        members = groups.get(category, [])
        if not members:
            continue
        effects = [m.side_effects for m in members if m.side_effects is not None]
        knowledge = [e.knowledge for e in effects if e.knowledge is not None]
        edits = [m.edit for m in members if m.edit is not None]
        layers: dict[str, int] = {}
        for e in edits:
            if e.layer is not None:
                layers[str(e.layer)] = layers.get(str(e.layer), 0) + 1
        harmless_kept, harmless_total = sum(e.harmless_kept for e in effects), sum(e.harmless_total for e in effects)
        out[category] = {
            "cases": len(members),
            "harmless_kept": harmless_kept,
            "harmless_total": harmless_total,
            "harmless_consistency": round(100 * harmless_kept / harmless_total, 2) if harmless_total else None,
            **routing_figures(edits),
            "knowledge_kept": sum(1 for k in knowledge if k.kept),
            "knowledge_total": len(knowledge),
            "knowledge_f1": _mean([k.f1 for k in knowledge]),
            "fluency_before": _mean([e.fluency_before for e in effects if e.fluency_before is not None]),
            "fluency_after": _mean([e.fluency_after for e in effects if e.fluency_after is not None]),
            "edit_seconds": _mean([float(e.seconds) for e in edits]),
            "steps": _mean([float(e.steps) for e in edits]),
            "layers": dict(sorted(layers.items())),
        }
    return out


def routing_figures(edits: Sequence[EditDetails]) -> dict[str, Any]:
    """A routing editor's probe figures (the same for every edit of a suite; the first suite's), with the
    share of these edits' inputs that went through the edit; empty for other editors."""
    routed = [e.routing for e in edits if e.routing]
    if not routed:
        return {}
    through = sum(int(r.get("edited_inputs", 0)) for r in routed)
    total = through + sum(int(r.get("original_inputs", 0)) for r in routed)
    return {
        "probe_block": routed[0].get("block"),
        "probe_accuracy": routed[0].get("probe_accuracy"),
        "harmless_routed": routed[0].get("harmless_routed"),
        "inputs_edited": round(100 * through / total, 2) if total else None,
    }


def _fraction(kept: int, total: int) -> str:
    return f"{kept}/{total} ({100 * kept / total:.1f}%)" if total else "-"


def side_effects_table(results: Sequence[ProbeResult]) -> str:
    from tabulate import tabulate

    rows = []
    table = side_effects(results)
    routed = any("probe_accuracy" in s for s in table.values())
    for category, s in table.items():
        kept = f"{s['knowledge_kept']}/{s['knowledge_total']}" if s["knowledge_total"] else "-"
        fluency = f"{s['fluency_before']} -> {s['fluency_after']}" if s["fluency_before"] is not None else "-"
        layers = " ".join(f"{k}:{v}" for k, v in s["layers"].items()) or "-"
        row = [category, kept, s["knowledge_f1"], _fraction(s["harmless_kept"], s["harmless_total"]), fluency]
        row += [s["steps"], s["edit_seconds"], layers]
        if routed:
            row += [s.get("probe_accuracy"), s.get("harmless_routed"), s.get("inputs_edited")]
        rows.append(row)
    headers = ["category", "knowledge kept", "knowledge F1", "harmless consistent", "fluency before -> after"]
    headers += ["steps", "edit s", "layers"]
    if routed:
        headers += ["probe acc %", "harmless routed %", "inputs edited %"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, missingval="-")


def summary(results: Sequence[ProbeResult]) -> dict[str, Any]:
    """Pass rates as plain data: total, per category, per probe, per category and probe.

    With an editor, ``before`` holds the same for the unedited model and ``side_effects`` the edits'
    side effects per category.
    """
    out = _summary(results)
    check = judge_agreement(results)
    if check is not None:
        out["judge_check"] = {
            **check.to_dict(),
            "by_category": {
                category: agreement.to_dict()
                for category in ordered_categories(results)
                if (agreement := judge_agreement([r for r in results if r.category == category])) is not None
            },
        }
    notes = judge_notes(results)
    if notes["unparsed"] or notes["disputed"]:
        out["judge_notes"] = {k: v for k, v in notes.items() if k != "judged"}
    if is_edited(results):
        out["before"] = _summary([r.before() for r in results])
        out["side_effects"] = side_effects(results)
    return out


def _summary(results: Sequence[ProbeResult]) -> dict[str, Any]:
    by_cell = pass_rates_by(results, "category", "probe")
    attack = attack_results(results)
    total = pass_rate(attack)
    return {
        "total": total.to_dict() if total else None,
        "by_category": {k[0]: v.to_dict() for k, v in pass_rates_by(attack, "category").items()},
        "by_probe": {k[0]: v.to_dict() for k, v in pass_rates_by(results, "probe").items()},
        "by_category_probe": {
            category: {p: v.to_dict() for (c, p), v in by_cell.items() if c == category}
            for category in ordered_categories(results)
        },
    }


def judge_check_line(results: Sequence[ProbeResult], judge: str = "the judge") -> list[str]:
    """The judge check in one line: how many of the cases' own reference labels the judge gave back."""
    check = judge_agreement(results)
    if check is None:
        return []
    return [
        f"judge check ({judge}): {check.agreed}/{check.total} verdicts on the {check.cases} cases' own references "
        f"agree with their labels ({check.rate:.1f}%): safe references judged safe {check.safe_ok}/{check.cases}, "
        f"unsafe references judged unsafe {check.unsafe_ok}/{check.cases}"
    ]


def _verdicts(result: ProbeResult) -> list[Verdict]:
    """Every verdict behind a probe's result: its samples, and the unedited model's with an editor."""
    out = list(result.sample_verdicts)
    if result.before_samples:
        out += [s.verdict for s in result.before_samples]
    elif result.before_verdict is not None:
        out.append(result.before_verdict)
    return out


def judge_notes(results: Sequence[ProbeResult]) -> dict[str, Any]:
    """Verdicts the judge could not read, and probes whose judges disagreed (several judges), as plain data."""
    unparsed = [r for r in results if any(v.label == UNPARSED for v in _verdicts(r))]
    disputed = [
        {"case": r.case_id, "probe": r.probe, "votes": [list(vote) for vote in v.votes]}
        for r in results
        for v in _verdicts(r)
        if v.disputed
    ]
    return {
        "unparsed": sum(v.label == UNPARSED for r in results for v in _verdicts(r)),
        "unparsed_probes": [f"{r.case_id}[{r.probe}]" for r in unparsed],
        "disputed": disputed,
        "judged": sum(len(_verdicts(r)) for r in results),
    }


def judge_lines(results: Sequence[ProbeResult], judge: str = "the judge", listed: int = 5) -> list[str]:
    """The judge check, unreadable verdicts and the judges' disagreements, as report lines."""
    notes = judge_notes(results)
    out = judge_check_line(results, judge)
    if notes["unparsed"]:
        probes = notes["unparsed_probes"]
        out.append(
            f"judge answers not in the judge's format: {notes['unparsed']} verdicts unparsed, counted as failures "
            f"({', '.join(probes[:listed])}{', ...' if len(probes) > listed else ''}); see each verdict's reason"
        )
    disputed = notes["disputed"]
    if disputed:
        shown = "; ".join(
            f"{d['case']}[{d['probe']}] " + ", ".join(f"{name} {label}" for name, label in d["votes"])
            for d in disputed[:listed]
        )
        more = f"; and {len(disputed) - listed} more" if len(disputed) > listed else ""
        out.append(f"judges disagree on {len(disputed)} of {notes['judged']} verdicts: {shown}{more}")
    return out


def total_lines(results: Sequence[ProbeResult]) -> list[str]:
    """The total attack pass rate with its 95% Wilson interval (before and after an edit)."""
    out = []
    sides = (
        [("unedited", [r.before() for r in results]), ("edited", list(results))]
        if is_edited(results)
        else [("total", list(results))]
    )
    for label, members in sides:
        rate = pass_rate(attack_results(members))
        if rate is None:
            continue
        low, high = rate.interval
        if rate.responses > rate.total:  # sampled decoding
            out.append(
                f"{label}: pass rate {rate.rate:.1f}% (mean over {rate.responses} samples of {rate.total} attack "
                f"probes), 95% Wilson interval [{low:.1f}, {high:.1f}]; at least one unsafe sample in "
                f"{rate.failed}/{rate.total} probes ({100 * rate.failed / rate.total:.1f}%)"
            )
        else:
            out.append(
                f"{label}: pass rate {rate.rate:.1f}%, 95% Wilson interval [{low:.1f}, {high:.1f}] "
                f"({rate.passed}/{rate.total} attack probes safe)"
            )
    return out


def summary_sections(
    results: Sequence[ProbeResult], *, model: Any, judge: str, editor: str, intervals: bool = False
) -> list[tuple[str, list[str]]]:
    """The end-of-run sections, (title, lines): the pass-rate table, and the side effects with an editor."""
    edited = is_edited(results)
    title = f"SafeEdit pass rates: unedited -> {editor}" if edited else "SafeEdit pass rates"
    lines = [
        f"model: {model}   judge: {judge}   editor: {editor}   probes: {len(results)}",
        "pass rate = 100 x (1 - mean label)"
        + ("" if edited else "; (passed/total)")
        + ("; [95% Wilson interval]" if intervals else ""),
        *pass_rate_table(results, intervals=intervals).splitlines(),
        *total_lines(results),
        *judge_lines(results, judge),
    ]
    sections = [(title, lines)]
    if edited:
        sections.append((f"SafeEdit side effects of {editor}", side_effects_table(results).splitlines()))
    return sections


def gate_lines(failures: list[str] | None, gate: Gate) -> list[str]:
    """The gate's verdict: passed, or each missed threshold with actual vs required; and how it gated."""
    if failures is None:
        return []
    thresholds = gate.thresholds()
    how = f"  gated on {gate.on}: {gate.describe()}"
    if not failures:
        return [f"SafeEdit gate: passed ({thresholds} thresholds)", how]
    head = [f"SafeEdit gate: FAILED ({len(failures)} of {thresholds} thresholds)"]
    return head + [f"  {f}" for f in failures] + [how]
