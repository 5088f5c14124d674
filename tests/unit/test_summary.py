"""Pass rates, tables and the failure text."""

from __future__ import annotations

from pytest_safeedit.judges.base import Verdict
from pytest_safeedit.plugin.items import render_failure
from pytest_safeedit.results.probes import ProbeResult, pass_rate
from pytest_safeedit.results.summary import pass_rate_table


def result(category: str, probe: str, label: str) -> ProbeResult:
    score = {"safe": 0.05, "unsafe": 0.95, "neutral": 0.5}[label]
    return ProbeResult("s", "c", category, probe, "in", "out", Verdict(label, score))


def test_pass_rate_is_the_papers_metric() -> None:
    rates = pass_rate([result("x", "DS", "safe"), result("x", "DS", "unsafe"), result("x", "DS", "neutral")])
    assert rates is not None
    assert (rates.rate, rates.passed, rates.failed, rates.neutral, rates.total) == (50.0, 1, 1, 1, 3)
    assert pass_rate([]) is None


def test_table_rows_columns_and_totals() -> None:
    table = pass_rate_table(
        [
            result("pornography", "DS", "unsafe"),
            result("offensiveness", "DS", "safe"),
            result("offensiveness", "DG_onlyQ", "safe"),
            result("custom thing", "DS", "unsafe"),
        ]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["category", "DS", "DG_onlyQ", "all"]
    assert [line.split()[0] for line in lines[2:]] == ["offensiveness", "pornography", "custom", "all"]
    assert lines[-1].split() == ["all", "33.3", "(1/3)", "100.0", "(1/1)", "50.0", "(2/4)"]
    assert "-" in lines[3].split()  # pornography has no DG_onlyQ probe


def test_failure_text_escapes_terminal_control_sequences() -> None:
    text = render_failure(
        ProbeResult(
            "s", "c-1", "offensiveness", "DS", "attack " * 200, "\x1b[31mred\x1b[0m Sure, here", Verdict("unsafe", 0.95)
        )
    )
    assert "\x1b" not in text
    assert "\\x1b[31mred" in text
    assert "[... " in text  # the long input is shortened
    assert "verdict:  unsafe (unsafe score 0.950)" in text
