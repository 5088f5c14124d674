"""Collection: suite files become one test item per (case, probe)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from pytest_safeedit.baseline import REGRESSION, probe_key
from pytest_safeedit.categories import category_slug
from pytest_safeedit.editing import EditorConfigError
from pytest_safeedit.judges import Verdict
from pytest_safeedit.results import ProbeResult
from pytest_safeedit.session import EditFailed, Request, SafeEditSession, SafeEditUnavailable
from pytest_safeedit.side_effects import over_refusal_verdict
from pytest_safeedit.stash import baseline_key, session_key, suite_errors_key, suite_gates_key
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
        session = self.config.stash[session_key]
        self.config.stash[suite_gates_key][self.suite.name] = self.suite.gate.to_dict()
        try:
            session.editor_for(self.suite)
        except EditorConfigError as exc:
            self.config.stash[suite_errors_key].add(self.nodeid)
            raise SuiteError(os.path.relpath(self.path, self.config.invocation_params.dir), str(exc)) from exc
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

    def requests(self) -> list[Request]:
        """The unedited generations this item needs (for batching across cases)."""
        session = self.session_object
        out = [session.probe_request(self.suite, self.probe.text)]
        knowledge = session.knowledge_request(self.suite, self.case)
        return out if knowledge is None else out + [knowledge]

    def setup(self) -> None:
        if not self.session_object.enabled:
            pytest.skip(SKIP_REASON)

    def runtest(self) -> None:
        session = self.session_object
        suite, case, probe = self.suite, self.case, self.probe
        before = session.respond(session.probe_request(suite, probe.text))
        before_verdict = self._verdict(before)
        base = ProbeResult(
            suite=suite.name,
            case_id=case.id,
            category=case.category,
            probe=probe.kind,
            input=probe.text,
            response=before,
            verdict=before_verdict,
            nodeid=self.nodeid,
        )
        editor = session.editor_for(suite)
        if editor is None:
            self.result = base
        elif case.benign:
            self.result = self._benign_after_edits(base, editor.name)
        else:
            outcome = session.case_outcome(suite, case)
            assert outcome.details is not None
            self.result = replace(
                base,
                response=outcome.responses[probe.kind],
                verdict=outcome.verdicts[probe.kind],
                editor=editor.name,
                before_response=before,
                before_verdict=before_verdict,
                edit=outcome.details.to_dict(),
                side_effects={
                    "knowledge": outcome.knowledge.to_dict() if outcome.knowledge else None,
                    "fluency_before": outcome.fluency_before,
                    "fluency_after": outcome.fluency_after,
                },
            )
        baseline = self.config.stash.get(baseline_key, None)
        if baseline is not None:
            key = probe_key(suite.name, case.id, probe.kind)
            self.result = replace(self.result, baseline=baseline.status(key, self.result.passed))
        verdict = self.result.verdict
        self.user_properties.extend(
            [
                ("safeedit_category", case.category),
                ("safeedit_probe", probe.kind),
                ("safeedit_verdict", verdict.label),
                ("safeedit_score", f"{verdict.score:.4f}"),
            ]
        )
        if not verdict.passed:
            raise ProbeFailure(self.result)

    def _verdict(self, response: str) -> Verdict:
        if self.case.benign:
            return over_refusal_verdict(response)
        (verdict,) = self.session_object.verdicts([response])
        return verdict

    def _benign_after_edits(self, base: ProbeResult, editor: str) -> ProbeResult:
        """A benign probe under every edit of its category: it fails if any edit makes the model refuse it."""
        session = self.session_object
        edits: list[dict[str, Any]] = []
        for attack in (c for c in self.suite.cases if c.category == self.case.category and not c.benign):
            response, verdict = session.case_outcome(self.suite, attack).benign[self.case.id]
            edits.append({"case_id": attack.id, "response": response, "verdict": verdict.to_dict()})
        if not edits:
            return base
        failed = [e for e in edits if not Verdict.from_dict(e["verdict"]).passed]
        shown = (failed or edits)[0]
        return replace(
            base,
            response=shown["response"],
            verdict=Verdict.from_dict(shown["verdict"]),
            editor=editor,
            before_response=base.response,
            before_verdict=base.verdict,
            edits=edits,
        )

    def repr_failure(  # type: ignore[override]
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, ProbeFailure):
            return render_failure(excinfo.value.result)
        if isinstance(excinfo.value, (SafeEditUnavailable, EditFailed)):
            return f"SafeEdit: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, max(0, self.case.line - 1), f"{self.case.id}[{self.probe.kind}] ({self.case.category})"


def render_failure(result: ProbeResult) -> str:
    v = result.verdict
    what = "refused (over-refusal)" if v.label == "refused" else "answered unsafely"
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
        losses = ", ".join(f"{k} {val:.4g}" for k, val in e.get("losses", {}).items())
        lines.append(
            f"  edit:     {e.get('editor')} layer {e.get('layer')} ({e.get('module')}), {e.get('steps')} steps, "
            f"{losses or 'no training'}, {e.get('seconds', 0):.2f} s"
        )
    if result.edits:
        refused = sum(not Verdict.from_dict(x["verdict"]).passed for x in result.edits)
        lines.append(f"  edits:    refused under {refused} of {len(result.edits)} edits of this category")
    return "\n".join(lines)


def is_suite_file(path: Path, patterns: tuple[str, ...], named: set[Path]) -> bool:
    if path.suffix not in (".yaml", ".yml", ".json"):
        return False
    if path.resolve() in named:
        return True
    return any(path.match(p) for p in patterns)
