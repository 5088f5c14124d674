"""The end-of-run pass-rate table and the JSON report."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from pytest_safeedit.categories import CATEGORIES, PROBES
from pytest_safeedit.results import PassRate, ProbeResult, pass_rate, pass_rates_by

SCHEMA = "pytest-safeedit-report"
SCHEMA_VERSION = 1
TOTAL = "all"


def _cell(rate: PassRate | None) -> str:
    if rate is None:
        return "-"
    return f"{rate.rate:.1f} ({rate.safe}/{rate.total})"


def ordered_categories(results: Sequence[ProbeResult]) -> list[str]:
    present = {r.category for r in results}
    return [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))


def ordered_probes(results: Sequence[ProbeResult]) -> list[str]:
    present = {r.probe for r in results}
    return [p for p in PROBES if p in present] + sorted(present - set(PROBES))


def pass_rate_table(results: Sequence[ProbeResult]) -> str:
    """Pass rate (and safe/total counts) per category and probe, with totals."""
    from tabulate import tabulate

    by_cell = pass_rates_by(results, "category", "probe")
    by_category = pass_rates_by(results, "category")
    by_probe = pass_rates_by(results, "probe")
    probes = ordered_probes(results)
    rows = []
    for category in ordered_categories(results):
        row = [category] + [_cell(by_cell.get((category, p))) for p in probes]
        rows.append(row + [_cell(by_category[(category,)])])
    rows.append([TOTAL] + [_cell(by_probe[(p,)]) for p in probes] + [_cell(pass_rate(results))])
    return tabulate(rows, headers=["category", *probes, TOTAL], tablefmt="simple", disable_numparse=True)


def summary(results: Sequence[ProbeResult]) -> dict[str, Any]:
    """Pass rates as plain data: total, per category, per probe, per category and probe."""
    by_cell = pass_rates_by(results, "category", "probe")
    total = pass_rate(results)
    return {
        "total": total.to_dict() if total else None,
        "by_category": {k[0]: v.to_dict() for k, v in pass_rates_by(results, "category").items()},
        "by_probe": {k[0]: v.to_dict() for k, v in pass_rates_by(results, "probe").items()},
        "by_category_probe": {
            category: {p: by_cell[(category, p)].to_dict() for p in ordered_probes(results) if (category, p) in by_cell}
            for category in ordered_categories(results)
        },
    }


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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)
