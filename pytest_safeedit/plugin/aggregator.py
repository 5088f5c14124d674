"""The plugin object that gathers probe results (from xdist workers too), applies the gate and the
baseline, and writes the summary and the reports."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from pytest_safeedit.cases.thresholds import Gate, gate_from_pairs
from pytest_safeedit.plugin.stash import baseline_key, evaluator_key, settings_key, suite_gates_key
from pytest_safeedit.plugin.xdist_support import is_controller, is_worker, received, send_to_controller
from pytest_safeedit.reports.baseline import (
    Baseline,
    baseline_line,
    comparison_metadata,
    paired_test,
    paired_test_lines,
)
from pytest_safeedit.reports.json_report import write_json_report
from pytest_safeedit.results.gate import gate_failures
from pytest_safeedit.results.probes import ProbeResult, probe_key
from pytest_safeedit.results.repair import RepairOutcome, repair_lines
from pytest_safeedit.results.summary import gate_lines, summary_sections

if TYPE_CHECKING:
    from pytest_safeedit.run.evaluator import Evaluator

#: What a worker sends the controller at its end, under this key.
WORKER_OUTPUT = "safeedit"
NOTHING_MEASURED = (
    "no SafeEdit probe ran, so the gate has nothing to measure; check the suite paths, the "
    "safeedit_suite_patterns ini key and any -k/-m selection"
)


def _sum_counters(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, (int, float)) and isinstance(out.get(key), (int, float)):
            out[key] = out[key] + value
        elif out.get(key) is None:
            out[key] = value
    return out


class SafeEditAggregator:
    """Collects every probe result that reaches this process and reports them at the end of the run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[ProbeResult] = []
        self.other_failures = 0
        self.gate_failures: list[str] | None = None
        self.mismatches: list[str] = []
        #: Under xdist: the model metadata, comparable metadata and suites the workers sent.
        self.worker_model: dict[str, Any] = {}
        self.worker_comparable: dict[str, Any] = {}
        self.suites: set[str] = set()
        self.known_categories: set[str] = set()
        self.known_probes: set[str] = set()
        self.usage_error: str | None = None
        #: The probes that run in this process, (suite, case, probe, node id) (set by the plugin).
        self.probes: list[tuple[Any, Any, Any, str]] = []
        #: What --safeedit-repair did (None without it), and what does it (run/repair.py's ``repair``, given
        #: by the plugin: the aggregator stays below the engine).
        self.repair: RepairOutcome | None = None
        self.repairer: Callable[..., RepairOutcome] | None = None

    @property
    def evaluator(self) -> Evaluator:
        return self.config.stash[evaluator_key]

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
        """xdist controller: merge what a worker sent (cache counters add up; settings by suite merge)."""
        data = received(node, WORKER_OUTPUT)
        if not isinstance(data, dict):
            return
        model = dict(data.get("model") or {})
        cache = _sum_counters(dict(self.worker_model.get("cache") or {}), dict(model.pop("cache", None) or {}))
        self.worker_model = {**self.worker_model, **model, "cache": cache}
        for key, value in (data.get("comparable") or {}).items():
            if isinstance(value, dict) and isinstance(self.worker_comparable.get(key), dict):
                self.worker_comparable[key] = {**self.worker_comparable[key], **value}
            else:
                self.worker_comparable[key] = value
        self.suites.update(data.get("suites") or [])
        self.known_categories.update(data.get("categories") or [])
        self.known_probes.update(data.get("probes") or [])
        self.config.stash[suite_gates_key].update(data.get("gates") or {})

    def collection_finished(self, suites: set[str], categories: set[str], probes: set[str]) -> None:
        """Called by the plugin once the items that will run are known and registered, with the suites,
        categories and probe kinds the collected suites have."""
        self.suites = suites
        self.known_categories.update(categories)
        self.known_probes.update(probes)
        if is_worker(self.config):
            return  # the controller compares with the baseline, from what the workers send
        unknown = self.unknown_threshold_names()
        if unknown:
            raise pytest.UsageError(unknown)
        self.mismatches = self.baseline_mismatches()
        if self.mismatches:
            self._mismatch_found(raise_strict=True)

    def unknown_threshold_names(self) -> str | None:
        """A message when a threshold names a category or probe that no collected suite has."""
        if not self.known_categories:
            return None  # nothing collected: the gate reports that it has nothing to measure
        return self.gate().unknown_names(self.known_categories, self.known_probes)

    def baseline_mismatches(self) -> list[str]:
        baseline = self.config.stash.get(baseline_key, None)
        if baseline is None:
            return []
        return baseline.mismatches(self.comparable_metadata(), self.suites)

    def _mismatch_found(self, *, raise_strict: bool) -> None:
        baseline = self.config.stash[baseline_key]
        message = f"baseline {baseline.path} does not match this run: " + "; ".join(self.mismatches)
        if self.config.stash[settings_key].baseline_strict:
            if raise_strict:
                raise pytest.UsageError(message + " (drop --safeedit-baseline-strict to compare anyway)")
            return
        warnings.warn(pytest.PytestWarning(message + "; the comparison may not mean much"), stacklevel=1)

    # ------------------------------------------------------------------ metadata and gate

    def comparable_metadata(self) -> dict[str, Any]:
        """The setup a baseline must share with this run (under xdist: as the workers resolved it)."""
        settings = self.config.stash[settings_key]
        evaluator = self.evaluator
        own = {
            "judge": settings.judge_name,
            "editor": evaluator.editors.name,  # "none" in a repair run: its items run unedited
            "editor_hyperparameters": evaluator.editors.hyperparameters(),
            "generation": evaluator.engine.generation_metadata(),
        }
        for key in ("editor_hyperparameters", "generation"):
            if self.worker_comparable.get(key):
                own[key] = self.worker_comparable[key]
        return own

    def metadata(self) -> dict[str, Any]:
        settings = self.config.stash[settings_key]
        baseline = self.config.stash.get(baseline_key, None)
        return {
            "baseline_comparison": None if baseline is None else comparison_metadata(baseline.path, self.results),
            "model": self.worker_model or self.evaluator.engine.metadata(),
            **self.comparable_metadata(),
            "seed": settings.seed,
            "gate": self.gate().to_dict(),
            "shard": list(settings.shard) if settings.shard else None,
            "settings": settings.to_dict(),
            **({} if self.repair is None else {"repair": self.repair.to_dict()}),
        }

    def gate(self) -> Gate:
        settings = self.config.stash[settings_key]
        options = gate_from_pairs(
            settings.min_pass_rate,
            settings.min_category_rate,
            settings.min_probe_rate,
            settings.gate_on,
            settings.min_judge_agreement,
        )
        suites = Gate()
        for _, data in sorted(self.config.stash[suite_gates_key].items()):
            suites = Gate(**data).merged_over(suites)
        return options.merged_over(suites)

    # ------------------------------------------------------------------ the end of the run

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = self.config
        settings = config.stash[settings_key]
        if is_worker(config):
            send_to_controller(
                config,
                WORKER_OUTPUT,
                {
                    "model": self.evaluator.engine.metadata(),
                    "comparable": self.comparable_metadata(),
                    "suites": sorted(self.suites),
                    "categories": sorted(self.known_categories),
                    "probes": sorted(self.known_probes),
                    "gates": config.stash[suite_gates_key],
                },
            )
            return
        if is_controller(config):
            self.usage_error = self.unknown_threshold_names()
            if self.usage_error:
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
            self.mismatches = self.baseline_mismatches()
            if self.mismatches:
                self._mismatch_found(raise_strict=False)
                if settings.baseline_strict:
                    session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if settings.repair is not None:
            self.repair = self._repair(session, settings.repair, settings.repair_holdout, settings.seed)
        gate = self.gate()
        if gate.configured and self.evaluator.engine.enabled and not self.usage_error:
            self.gate_failures = gate_failures(gate, self.results) if self.results else [NOTHING_MEASURED]
            if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
                failed = bool(self.gate_failures or self.other_failures)
                session.exitstatus = pytest.ExitCode.TESTS_FAILED if failed else pytest.ExitCode.OK
        # After the gate, which sets the status from the probes alone: a repair that failed fails the run.
        if self.repair is not None and self.repair.error and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        # Warnings wait until every report is written, so that even -W error costs no report.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._write_reports()
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _repair(self, session: pytest.Session, out: str, fraction: float, seed: int) -> RepairOutcome:
        """``--safeedit-repair``: from the results of this run's items (see run/repair.py)."""
        from pytest_safeedit.plugin.stash import repair_editors_key

        editors = self.config.stash[repair_editors_key]
        engine = self.evaluator.engine
        outcome = RepairOutcome(checkpoint=out, editor=editors.name)
        if session.shouldstop or session.shouldfail or session.exitstatus == pytest.ExitCode.INTERRUPTED:
            return replace(outcome, note="not made: the run was stopped before every probe ran")
        if engine.failure:
            return replace(outcome, error=f"not made: {engine.failure}")
        ran = {r.key for r in self.results}
        probes = [p for p in self.probes if probe_key(p[0].key, p[1].id, p[2].kind) in ran]
        if not probes:
            return replace(outcome, note="not made: no probe ran")
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"SafeEdit: repairing with the {editors.name} editor, writing {out} ...")
        assert self.repairer is not None, "the plugin sets the repairer with --safeedit-repair"
        try:
            return self.repairer(self.evaluator, editors, probes, self.results, out, fraction=fraction, seed=seed)
        except KeyboardInterrupt:
            # Interrupted while repairing: no checkpoint (it is moved in place only when whole), every report.
            session.exitstatus = pytest.ExitCode.INTERRUPTED
            return replace(outcome, error="interrupted (Ctrl-C) while repairing; no checkpoint was written")

    def _write_reports(self) -> None:
        """Every report asked for; one that fails to be written is a warning, and the others are written."""
        settings = self.config.stash[settings_key]
        meta = self.metadata()

        def markdown(path: str) -> None:
            from pytest_safeedit.reports.markdown_report import write_markdown

            write_markdown(path, self.results, meta, self.gate_failures)

        def html(path: str) -> None:
            from pytest_safeedit.reports.html_report import write_html

            write_html(path, self.results, meta, self.gate_failures)

        def json(path: str) -> None:
            write_json_report(path, self.results, meta)

        writers: list[tuple[str, str | None, Callable[[str], None]]] = [
            ("JSON report", settings.report, json),
            ("baseline", settings.baseline if settings.update_baseline else None, json),
            ("Markdown report", settings.report_md, markdown),
            ("HTML report", settings.report_html, html),
        ]
        for label, path, write in writers:
            if not path:
                continue
            try:
                write(path)
            except Exception as exc:  # any failure: the other reports are still written
                warnings.warn(
                    pytest.PytestWarning(
                        f"SafeEdit: the {label} {path} could not be written ({type(exc).__name__}: {exc})"
                    ),
                    stacklevel=1,
                )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        settings = self.config.stash[settings_key]
        write = terminalreporter.write_line
        if self.usage_error:
            write(f"ERROR: {self.usage_error}")
        if self.results:
            sections = summary_sections(
                self.results,
                model=settings.model,
                judge=settings.judge_name,
                editor=self.evaluator.editors.name,
                intervals=settings.show_intervals,
            )
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
        elif self.gate_failures:
            terminalreporter.section("SafeEdit pass rates", sep="=")
        load_failure = self.worker_model.get("load_failure") or self.evaluator.engine.failure
        if load_failure:
            write(f"SafeEdit: {load_failure}")
        failure = (self.worker_model.get("cache") or {}).get("failure") or self.evaluator.engine.cache.failure
        if failure:
            write(f"SafeEdit generation cache turned off during the run: {failure}")
        off = (self.worker_model.get("cache") or {}).get("off_reason") or self.evaluator.engine.cache.off_reason
        if off:
            write(f"SafeEdit generation cache off for this run: {off}")
        for line in gate_lines(self.gate_failures, self.gate()):
            write(line)
        if self.gate_failures is not None and self.other_failures:
            write(f"  {self.other_failures} other failure(s) or error(s) outside the probes also fail the run")
        self._summary_baseline(write)
        if self.repair is not None:
            terminalreporter.section("SafeEdit repair: unedited -> repaired", sep="=")
            for line in repair_lines(self.repair):
                write(line)

    def _summary_baseline(self, write: Any) -> None:
        settings = self.config.stash[settings_key]
        if settings.update_baseline and settings.baseline:
            write(f"SafeEdit baseline written: {settings.baseline} ({len(self.results)} probes)")
            return
        baseline: Baseline | None = self.config.stash.get(baseline_key, None)
        if baseline is None:
            return
        write(baseline_line(baseline.path, self.results))
        try:
            lines = paired_test_lines(paired_test(self.results), self.results)
        except Exception as exc:  # already a warning from the end of the session, with the reports written
            lines = [f"  paired test: could not be computed ({type(exc).__name__}: {exc})"]
        for line in lines:
            write(line)
        for mismatch in self.mismatches:
            write(f"  mismatch: {mismatch}")
        if self.mismatches and settings.baseline_strict:
            write("  the baseline does not match and --safeedit-baseline-strict is set: the run fails")
        write("To accept the current state as the new baseline, run again with --safeedit-update-baseline.")
