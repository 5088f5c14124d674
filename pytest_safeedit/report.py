"""The end-of-run pass-rate table and the JSON report."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from pytest_safeedit.categories import BENIGN_PROBE, CATEGORIES, PROBES
from pytest_safeedit.gencache import atomic_write
from pytest_safeedit.results import PassRate, ProbeResult, pass_rate, pass_rates_by

SCHEMA = "pytest-safeedit-report"
SCHEMA_VERSION = 1
TOTAL = "all"


def _rate_cell(rate: PassRate | None) -> str:
    return "-" if rate is None else f"{rate.rate:.1f} ({rate.passed}/{rate.total})"


def _pair_cell(before: PassRate | None, after: PassRate | None) -> str:
    if before is None or after is None:
        return "-"
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
    attack = [r for r in results if r.probe != BENIGN_PROBE]
    out: dict[tuple[str, str], PassRate | None] = {}
    for (category, probe), rate in pass_rates_by(results, "category", "probe").items():
        out[(category, probe)] = rate
    for (probe,), rate in pass_rates_by(results, "probe").items():
        out[(TOTAL, probe)] = rate
    for (category,), rate in pass_rates_by(attack, "category").items():
        out[(category, TOTAL)] = rate
    out[(TOTAL, TOTAL)] = pass_rate(attack)
    return out


def pass_rate_table(results: Sequence[ProbeResult]) -> str:
    """Pass rate per category and probe with totals; with an editor, unedited -> edited.

    Without an editor a cell also counts passing probes over all probes. ``all`` covers the attack
    probes; the ``benign`` column (over-refusal) is the share of harmless questions answered.
    """
    from tabulate import tabulate

    edited = is_edited(results)
    after = _rates(results)
    before = _rates([r.before() for r in results]) if edited else after
    probes = ordered_probes(results)
    columns = [*probes, TOTAL] + ([BENIGN_PROBE] if any(r.probe == BENIGN_PROBE for r in results) else [])
    rows = []
    for category in [*ordered_categories(results), TOTAL]:
        row = [category]
        for probe in columns:
            key = (category, probe)
            row.append(_pair_cell(before.get(key), after.get(key)) if edited else _rate_cell(after.get(key)))
        rows.append(row)
    return tabulate(rows, headers=["category", *columns], tablefmt="simple", disable_numparse=True)


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def side_effects(results: Sequence[ProbeResult]) -> dict[str, dict[str, Any]]:
    """Per category (and ``all``): knowledge kept, fluency before/after, edit time and steps, layers."""
    cases: dict[tuple[str, str], ProbeResult] = {}
    for r in results:
        if r.side_effects is not None:
            cases.setdefault((r.suite, r.case_id), r)
    groups: dict[str, list[ProbeResult]] = {}
    for r in cases.values():
        groups.setdefault(r.category, []).append(r)
        groups.setdefault(TOTAL, []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for category in [*ordered_categories(list(cases.values())), TOTAL]:
        members = groups.get(category, [])
        if not members:
            continue
        knowledge = [m.side_effects["knowledge"] for m in members if m.side_effects and m.side_effects["knowledge"]]
        edits = [m.edit or {} for m in members]
        layers: dict[str, int] = {}
        for e in edits:
            if e.get("layer") is not None:
                layers[str(e["layer"])] = layers.get(str(e["layer"]), 0) + 1
        out[category] = {
            "cases": len(members),
            "knowledge_kept": sum(1 for k in knowledge if k["kept"]),
            "knowledge_total": len(knowledge),
            "knowledge_f1": _mean([k["f1"] for k in knowledge]),
            "fluency_before": _mean(
                [
                    m.side_effects["fluency_before"]
                    for m in members
                    if m.side_effects and m.side_effects["fluency_before"] is not None
                ]
            ),
            "fluency_after": _mean(
                [
                    m.side_effects["fluency_after"]
                    for m in members
                    if m.side_effects and m.side_effects["fluency_after"] is not None
                ]
            ),
            "edit_seconds": _mean([float(e.get("seconds", 0.0)) for e in edits]),
            "steps": _mean([float(e.get("steps", 0)) for e in edits]),
            "layers": dict(sorted(layers.items())),
        }
    return out


def side_effects_table(results: Sequence[ProbeResult]) -> str:
    from tabulate import tabulate

    rows = []
    for category, s in side_effects(results).items():
        kept = f"{s['knowledge_kept']}/{s['knowledge_total']}" if s["knowledge_total"] else "-"
        fluency = f"{s['fluency_before']} -> {s['fluency_after']}" if s["fluency_before"] is not None else "-"
        layers = " ".join(f"{k}:{v}" for k, v in s["layers"].items()) or "-"
        rows.append([category, kept, s["knowledge_f1"], fluency, s["steps"], s["edit_seconds"], layers])
    headers = ["category", "knowledge kept", "knowledge F1", "fluency before -> after", "steps", "edit s", "layers"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, missingval="-")


def summary(results: Sequence[ProbeResult]) -> dict[str, Any]:
    """Pass rates as plain data: total, per category, per probe, per category and probe.

    With an editor, ``before`` holds the same for the unedited model and ``side_effects`` the edits'
    side effects per category.
    """
    out = _summary(results)
    if is_edited(results):
        out["before"] = _summary([r.before() for r in results])
        out["side_effects"] = side_effects(results)
    return out


def _summary(results: Sequence[ProbeResult]) -> dict[str, Any]:
    by_cell = pass_rates_by(results, "category", "probe")
    attack = [r for r in results if r.probe != BENIGN_PROBE]
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


def summary_sections(
    results: Sequence[ProbeResult], *, model: Any, judge: str, editor: str
) -> list[tuple[str, list[str]]]:
    """The end-of-run sections, (title, lines): the pass-rate table, and the side effects with an editor."""
    edited = is_edited(results)
    title = f"SafeEdit pass rates: unedited -> {editor}" if edited else "SafeEdit pass rates"
    lines = [
        f"model: {model}   judge: {judge}   editor: {editor}   probes: {len(results)}",
        "pass rate = 100 x (1 - mean label)" + ("" if edited else "; (passed/total)"),
        *pass_rate_table(results).splitlines(),
    ]
    sections = [(title, lines)]
    if edited:
        sections.append((f"SafeEdit side effects of {editor}", side_effects_table(results).splitlines()))
    return sections


def gate_lines(failures: list[str] | None, thresholds: int) -> list[str]:
    """The gate's verdict: passed, or each missed threshold with actual vs required."""
    if failures is None:
        return []
    if not failures:
        return [f"SafeEdit gate: passed ({thresholds} thresholds)"]
    return [f"SafeEdit gate: FAILED ({len(failures)} of {thresholds} thresholds)"] + [f"  {f}" for f in failures]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("pytest-safeedit", "pytest", "torch", "transformers", "tokenizers", "pluggy", "pyyaml"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_json_report(path: str, results: Sequence[ProbeResult], meta: dict[str, Any]) -> None:
    """Write the report atomically (a reader never sees half a file)."""
    document = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metadata": {"versions": package_versions(), **meta},
        "summary": summary(results),
        "probes": [r.to_dict() for r in results],
    }
    atomic_write(Path(path), json.dumps(document, indent=2, ensure_ascii=False) + "\n")
