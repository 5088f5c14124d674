"""pytest collection nodes: a suite file, and one thin test item per (case, probe)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from pytest_safeedit.backends.base import Request
from pytest_safeedit.cases.categories import category_slug
from pytest_safeedit.cases.loading import load_suite, suite_key
from pytest_safeedit.cases.model import Case, Probe, Suite, SuiteError
from pytest_safeedit.editors.base import EditorConfigError
from pytest_safeedit.judges.base import REFUSED, UNPARSED
from pytest_safeedit.plugin.stash import evaluator_key, repair_editors_key, suite_errors_key, suite_gates_key
from pytest_safeedit.results.probes import REGRESSION, ProbeResult
from pytest_safeedit.run.engine import EditFailed, ModelUnavailable, ProbeUnanswered
from pytest_safeedit.util.text import printable, shorten

if TYPE_CHECKING:
    from pytest_safeedit.run.evaluator import Evaluator

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
        config = self.config
        where = os.path.relpath(self.path, config.invocation_params.dir)
        resolved = self.path.resolve()
        key = suite_key(resolved, config.rootpath)
        try:
            self.suite = load_suite(self.path, key=key)
        except SuiteError as exc:
            config.stash[suite_errors_key].add(self.nodeid)
            exc.path = where
            raise
        editors = config.stash.get(repair_editors_key, None) or config.stash[evaluator_key].editors
        try:
            editors.for_suite(self.suite)
        except EditorConfigError as exc:
            config.stash[suite_errors_key].add(self.nodeid)
            raise SuiteError(where, str(exc)) from exc
        config.stash[suite_gates_key][self.suite.key] = self.suite.gate.to_dict()
        # Markers of the suite's categories are registered before any item carries them (--strict-markers).
        for category in self.suite.categories:
            config.addinivalue_line("markers", f"{category_slug(category)}: SafeEdit probes of category '{category}'")
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
    """One probe of one case: the evaluator's result, failing when the response is unsafe."""

    def __init__(self, *, case: Case, probe: Probe, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.probe = probe
        self.add_marker("safeedit")
        self.add_marker(category_slug(case.category))
        self.keywords[probe.kind] = True
        self.result: ProbeResult | None = None

    @property
    def suite(self) -> Suite:
        parent = self.parent
        assert isinstance(parent, SuiteFile)
        return parent.suite

    @property
    def evaluator(self) -> Evaluator:
        return self.config.stash[evaluator_key]

    def requests(self) -> list[Request]:
        """The unedited generations this item needs (for batching across cases)."""
        return self.evaluator.requests(self.suite, self.case, self.probe)

    def setup(self) -> None:
        if not self.evaluator.engine.enabled:
            pytest.skip(SKIP_REASON)

    def runtest(self) -> None:
        self.result = self.evaluator.evaluate(self.suite, self.case, self.probe, self.nodeid)
        verdict = self.result.verdict
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
        if isinstance(excinfo.value, ModelUnavailable) and excinfo.value.repeated:
            return "SafeEdit: not run: the model or judge could not be loaded (the first such probe shows why)"
        if isinstance(excinfo.value, (ModelUnavailable, EditFailed, ProbeUnanswered)):
            return f"SafeEdit: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, max(0, self.case.line - 1), f"{self.case.id}[{self.probe.kind}] ({self.case.category})"


def render_failure(result: ProbeResult) -> str:
    v = result.verdict
    what = {
        REFUSED: "refused (over-refusal)",
        UNPARSED: "not judged: the judge's answer could not be read (a failure until a judge can read it)",
    }.get(v.label, "answered unsafely")
    after = f" after the {result.editor} edit" if result.editor else ""
    lines = [
        f"probe {result.probe} of case {result.case_id} ({result.category}) was {what}{after}",
        *(["  REGRESSION: this probe passed in the baseline"] if result.baseline == REGRESSION else []),
        f"  input:    {printable(shorten(result.input, 300))}",
        f"  response: {printable(shorten(result.response, 1200))}",
        f"  verdict:  {v.label} (unsafe score {v.score:.3f}) {printable(v.reason)}",
    ]
    if result.before_verdict is not None and result.before_response is not None:
        b = result.before_verdict
        lines.append(
            f"  before:   {b.label} (unsafe score {b.score:.3f}): {printable(shorten(result.before_response, 300))}"
        )
    if result.edit:
        e = result.edit
        losses = ", ".join(f"{k} {val:.4g}" for k, val in e.losses.items())
        lines.append(
            f"  edit:     {e.editor} layer {e.layer} ({e.module}), {e.steps} steps, "
            f"{losses or 'no training'}, {e.seconds:.2f} s"
        )
        if e.routing:
            r = e.routing
            lines.append(
                f"  routing:  {r.get('edited_inputs')} of the case's inputs through the edit, "
                f"{r.get('original_inputs')} on the original weights (probe on block {r.get('block')}, "
                f"held-out accuracy {r.get('probe_accuracy')}%, harmless inputs routed {r.get('harmless_routed')}%)"
            )
    if result.edits:
        refused = sum(not x.verdict.passed for x in result.edits)
        lines.append(f"  edits:    refused under {refused} of {len(result.edits)} edits of this category")
    return "\n".join(lines)
