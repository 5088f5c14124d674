"""Collection: suite files become one test item per (case, probe)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from pytest_safeedit.categories import category_slug
from pytest_safeedit.results import ProbeResult
from pytest_safeedit.session import Request, SafeEditSession, SafeEditUnavailable
from pytest_safeedit.stash import session_key, suite_errors_key
from pytest_safeedit.suite import Case, Probe, Suite, SuiteError, load_suite
from pytest_safeedit.text import printable, shorten

SKIP_REASON = "no model to test: pass --safeedit-model PATH_OR_ID (or 'demo' for the built-in demo model)"


class ProbeFailure(Exception):
    """A probe's response was judged unsafe."""

    def __init__(self, result: ProbeResult) -> None:
        super().__init__(f"{result.case_id}[{result.probe}] unsafe")
        self.result = result


class SuiteFile(pytest.File):
    """A YAML suite or an official SafeEdit JSON file."""

    suite: Suite

    def collect(self) -> Iterator[pytest.Item]:
        try:
            self.suite = load_suite(self.path)
        except SuiteError as exc:
            self.config.stash[suite_errors_key].add(self.nodeid)
            exc.path = os.path.relpath(self.path, self.config.invocation_params.dir)
            raise
        for case in self.suite.cases:
            for probe in case.probes:
                yield ProbeItem.from_parent(self, name=f"{case.id}[{probe.kind}]", case=case, probe=probe)

    def repr_failure(  # type: ignore[override]
        self, excinfo: ExceptionInfo[BaseException]
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, SuiteError):
            return f"SafeEdit suite error: {excinfo.value.render()}"
        return super().repr_failure(excinfo)


class ProbeItem(pytest.Item):
    """One probe of one case: generate the response, judge it, fail when it is unsafe."""

    def __init__(self, *, case: Case, probe: Probe, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.probe = probe
        slug = category_slug(case.category)
        self.add_marker("safeedit")
        self.add_marker(slug)
        self.keywords[probe.kind] = True
        self.result: ProbeResult | None = None

    @property
    def suite(self) -> Suite:
        parent = self.parent
        assert isinstance(parent, SuiteFile)
        return parent.suite

    @property
    def session_object(self) -> SafeEditSession:
        return self.config.stash[session_key]

    def request(self) -> Request:
        return Request(self.probe.text, self.session_object.max_new_tokens(dict(self.suite.defaults)))

    def setup(self) -> None:
        if not self.session_object.enabled:
            pytest.skip(SKIP_REASON)

    def runtest(self) -> None:
        session = self.session_object
        response = session.respond(self.request())
        (verdict,) = session.verdicts([response])
        self.result = ProbeResult(
            suite=self.suite.name,
            case_id=self.case.id,
            category=self.case.category,
            probe=self.probe.kind,
            input=self.probe.text,
            response=response,
            verdict=verdict,
            nodeid=self.nodeid,
        )
        self.user_properties.extend(
            [
                ("safeedit_category", self.case.category),
                ("safeedit_probe", self.probe.kind),
                ("safeedit_verdict", verdict.label),
                ("safeedit_score", f"{verdict.score:.4f}"),
            ]
        )
        if not verdict.passed:
            raise ProbeFailure(self.result)

    def repr_failure(  # type: ignore[override]
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, ProbeFailure):
            return render_failure(excinfo.value.result)
        if isinstance(excinfo.value, SafeEditUnavailable):
            return f"SafeEdit: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, max(0, self.case.line - 1), f"{self.case.id}[{self.probe.kind}] ({self.case.category})"


def render_failure(result: ProbeResult) -> str:
    v = result.verdict
    lines = [
        f"probe {result.probe} of case {result.case_id} ({result.category}) was answered unsafely",
        f"  input:    {printable(shorten(result.input, 300))}",
        f"  response: {printable(shorten(result.response, 1200))}",
        f"  verdict:  {v.label} (unsafe score {v.score:.3f}) {printable(v.reason)}",
    ]
    return "\n".join(lines)


def is_suite_file(path: Path, patterns: tuple[str, ...], named: set[Path]) -> bool:
    if path.suffix not in (".yaml", ".yml", ".json"):
        return False
    if path.resolve() in named:
        return True
    return any(path.match(p) for p in patterns)
