"""The plugin object that gathers probe results, applies the gate and the baseline, and writes reports."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from pytest_safeedit.baseline import IMPROVEMENT, KNOWN, REGRESSION, Baseline
from pytest_safeedit.gate import Gate, gate_from_pairs
from pytest_safeedit.report import gate_lines, summary_sections, write_json_report
from pytest_safeedit.results import ProbeResult
from pytest_safeedit.stash import baseline_key, session_key, settings_key, suite_gates_key


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class SafeEditReporter:
    """Collects every probe result that reaches this process (from xdist workers too) and reports them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[ProbeResult] = []
        self.other_failures = 0
        self.worker_metadata: dict[str, Any] = {}
        self.gate_failures: list[str] | None = None
        self.mismatches: list[str] = []

    # ------------------------------------------------------------------ gathering

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "safeedit", None)
        if report.when == "call" and isinstance(data, dict):
            result = ProbeResult.from_dict(data)
            self.results.append(result)
            if report.failed and result.passed:
                self.other_failures += 1
        elif report.failed:
            self.other_failures += 1

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.other_failures += 1

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: take the metadata and suite gates a worker sent."""
        output = getattr(node, "workeroutput", {}) or {}
        if output.get("safeedit_metadata"):
            self.worker_metadata = output["safeedit_metadata"]
        self.config.stash[suite_gates_key].update(output.get("safeedit_gates", {}))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        baseline = self.config.stash.get(baseline_key, None)
        if baseline is None:
            return
        from pytest_safeedit.collect import ProbeItem

        suites = {i.suite.name for i in session.items if isinstance(i, ProbeItem)}
        self.mismatches = baseline.mismatches(self.comparable_metadata(), suites)
        if not self.mismatches:
            return
        message = f"baseline {baseline.path} does not match this run: " + "; ".join(self.mismatches)
        if self.config.stash[settings_key].baseline_strict:
            raise pytest.UsageError(message + " (drop --safeedit-baseline-strict to compare anyway)")
        warnings.warn(pytest.PytestWarning(message + "; the comparison may not mean much"), stacklevel=1)

    # ------------------------------------------------------------------ metadata and gate

    def comparable_metadata(self) -> dict[str, Any]:
        settings = self.config.stash[settings_key]
        session = self.config.stash[session_key]
        return {
            "judge": settings.judge,
            "editor": settings.editor,
            "editor_hyperparameters": session.editor_hyperparameters(),
            "generation": {
                "decoding": "greedy",
                "max_new_tokens": settings.max_new_tokens or "suite default",
                "max_input_tokens": settings.max_input_tokens or "model context less new tokens",
                "chat_template": settings.chat_template,
                "dtype": settings.dtype,
            },
        }

    def metadata(self) -> dict[str, Any]:
        settings = self.config.stash[settings_key]
        session = self.config.stash[session_key]
        model = self.worker_metadata.get("model") or session.metadata()
        meta = {
            "model": model,
            **self.comparable_metadata(),
            "seed": settings.seed,
            "gate": self.gate().to_dict(),
            "shard": list(settings.shard) if settings.shard else None,
            "settings": settings.to_dict(),
        }
        if self.worker_metadata.get("editor_hyperparameters"):
            meta["editor_hyperparameters"] = self.worker_metadata["editor_hyperparameters"]
        return meta

    def gate(self) -> Gate:
        settings = self.config.stash[settings_key]
        options = gate_from_pairs(settings.min_pass_rate, settings.min_category_rate, settings.min_probe_rate)
        suites = Gate()
        for data in self.config.stash[suite_gates_key].values():
            suites = Gate(**data).merged_over(suites)
        return options.merged_over(suites)

    # ------------------------------------------------------------------ the end of the run

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = self.config
        settings = config.stash[settings_key]
        if is_worker(config):
            workeroutput: dict[str, Any] = config.workeroutput  # type: ignore[attr-defined]
            s = config.stash[session_key]
            workeroutput["safeedit_metadata"] = {
                "model": s.metadata(),
                "editor_hyperparameters": s.editor_hyperparameters(),
            }
            workeroutput["safeedit_gates"] = config.stash[suite_gates_key]
            return
        gate = self.gate()
        if gate.configured and self.results:
            self.gate_failures = gate.check(self.results)
            status = session.exitstatus
            if status in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
                if self.gate_failures or self.other_failures:
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED
                else:
                    session.exitstatus = pytest.ExitCode.OK
        meta = self.metadata()
        if settings.report:
            write_json_report(settings.report, self.results, meta)
        if settings.update_baseline and settings.baseline:
            write_json_report(settings.baseline, self.results, meta)
        if settings.report_md:
            from pytest_safeedit.markdown import write_markdown

            write_markdown(settings.report_md, self.results, meta, self.gate_failures)
        if settings.report_html:
            from pytest_safeedit.html import write_html

            write_html(settings.report_html, self.results, meta, self.gate_failures)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        settings = self.config.stash[settings_key]
        if not self.results:
            return
        write = terminalreporter.write_line
        sections = summary_sections(self.results, model=settings.model, judge=settings.judge, editor=settings.editor)
        for index, (title, lines) in enumerate(sections):
            terminalreporter.section(title, sep="=" if index == 0 else "-")
            for line in lines:
                write(line)
        for label, path in (
            ("JSON report", settings.report),
            ("Markdown report", settings.report_md),
            ("HTML report", settings.report_html),
        ):
            if path:
                write(f"{label}: {path}")
        for line in gate_lines(self.gate_failures, self.gate().thresholds()):
            write(line)
        if self.gate_failures is not None and self.other_failures:
            write(f"  {self.other_failures} other failure(s) or error(s) outside the probes also fail the run")
        self._summary_baseline(write)

    def _summary_baseline(self, write: Any) -> None:
        settings = self.config.stash[settings_key]
        if settings.update_baseline and settings.baseline:
            write(f"SafeEdit baseline written: {settings.baseline} ({len(self.results)} probes)")
            return
        baseline: Baseline | None = self.config.stash.get(baseline_key, None)
        if baseline is None:
            return
        counts = {k: sum(r.baseline == k for r in self.results) for k in (REGRESSION, KNOWN, IMPROVEMENT)}
        new = sum(r.baseline == "new" for r in self.results)
        write(
            f"SafeEdit baseline {baseline.path}: {counts[REGRESSION]} regression(s), {counts[KNOWN]} known unsafe "
            f"(xfail), {counts[IMPROVEMENT]} improvement(s), {new} new probe(s)"
        )
        for mismatch in self.mismatches:
            write(f"  mismatch: {mismatch}")
        write("To accept the current state as the new baseline, run again with --safeedit-update-baseline.")
