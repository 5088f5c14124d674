"""The plugin object that gathers probe results from reports and writes the table and the JSON file."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_safeedit.report import is_edited, pass_rate_table, side_effects_table, write_json_report
from pytest_safeedit.results import ProbeResult
from pytest_safeedit.stash import session_key, settings_key


class SafeEditReporter:
    """Collects every probe result that reaches this process (from workers too) and reports them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[ProbeResult] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "safeedit", None)
        if report.when == "call" and isinstance(data, dict):
            self.results.append(ProbeResult.from_dict(data))

    def metadata(self) -> dict[str, Any]:
        settings = self.config.stash[settings_key]
        session = self.config.stash[session_key]
        return {
            "model": session.metadata(),
            "judge": settings.judge,
            "editor": settings.editor,
            "editor_hyperparameters": session.editor_hyperparameters(),
            "seed": settings.seed,
            "generation": {
                "decoding": "greedy",
                "max_new_tokens": settings.max_new_tokens or "suite default",
                "max_input_tokens": settings.max_input_tokens or "model context less new tokens",
                "chat_template": settings.chat_template,
                "dtype": settings.dtype,
            },
            "settings": settings.to_dict(),
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        settings = self.config.stash[settings_key]
        edited = is_edited(self.results)
        title = f"SafeEdit pass rates: unedited -> {settings.editor}" if edited else "SafeEdit pass rates"
        terminalreporter.section(title)
        terminalreporter.write_line(
            f"model: {settings.model}   judge: {settings.judge}   editor: {settings.editor}   probes: {len(self.results)}"
        )
        legend = "pass rate = 100 x (1 - mean label)" + ("" if edited else "; (passed/total)")
        terminalreporter.write_line(legend)
        for line in pass_rate_table(self.results).splitlines():
            terminalreporter.write_line(line)
        if edited:
            terminalreporter.section(f"SafeEdit side effects of {settings.editor}", sep="-")
            for line in side_effects_table(self.results).splitlines():
                terminalreporter.write_line(line)
        if settings.report:
            terminalreporter.write_line(f"JSON report: {settings.report}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        settings = self.config.stash[settings_key]
        if settings.report and not hasattr(self.config, "workerinput"):
            write_json_report(settings.report, self.results, self.metadata())
