"""The JSON report: writing it, and reading it back (for baselines and for merging shards)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from pytest_safeedit.results.probes import ProbeResult
from pytest_safeedit.results.stats import guarded
from pytest_safeedit.results.summary import summary
from pytest_safeedit.util.files import atomic_write

SCHEMA = "pytest-safeedit-report"
#: Raised on every breaking change; version 2 keys probes by the suite's path from the rootdir.
SCHEMA_VERSION = 2


class ReportError(Exception):
    """A JSON report that cannot be used, with the path and what to do about it."""


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("pytest-safeedit", "pytest", "torch", "transformers", "tokenizers", "pluggy", "pyyaml"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_json_report(path: str, results: Sequence[ProbeResult], meta: Mapping[str, Any]) -> None:
    """Write the report atomically (a reader never sees half a file); summary statistics that cannot be
    computed are a warning and an ``error`` in their place, never a lost report."""
    document = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metadata": {"versions": package_versions(), **meta},
        "summary": guarded("the summary statistics", lambda: summary(results), lambda reason: {"error": reason}),
        "probes": [r.to_dict() for r in results],
    }
    atomic_write(Path(path), json.dumps(document, indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class Report:
    """A JSON report read back: its metadata and its probes."""

    path: str
    metadata: Mapping[str, Any]
    results: tuple[ProbeResult, ...]


def read_report(path: str, what: str = "") -> Report:
    """Read a report written by this version's schema; anything else is a :class:`ReportError` that
    names the file, as ``what`` (e.g. "baseline") when given."""
    name = f"{what} {path}".strip()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ReportError(f"{name} is not a UTF-8 text file") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{name} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("probes"), list):
        raise ReportError(f"{name} is not a pytest-safeedit JSON report (--safeedit-report)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReportError(
            f"{name} has report schema version {version!r}, this pytest-safeedit reads version {SCHEMA_VERSION}; "
            "write it again with this version"
        )
    results = []
    for index, record in enumerate(data["probes"]):
        try:
            results.append(ProbeResult.from_dict(record))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReportError(f"{name}: probe #{index + 1} is malformed ({type(exc).__name__}: {exc})") from None
    metadata = data.get("metadata")
    return Report(path=path, metadata=metadata if isinstance(metadata, dict) else {}, results=tuple(results))
