"""CI gating: thresholds, baselines, JUnit, Markdown and HTML reports, xdist workers, shards and merge."""

from __future__ import annotations

import importlib
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import BENIGN, MINI_SUITE, run_suite

SUITE = MINI_SUITE + BENIGN  # with the random tiny model: 7 unsafe attack probes, 1 answered benign probe


@pytest.fixture
def run(pytester: pytest.Pytester, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    pytester.makefile(".safeedit.yaml", mini=SUITE)

    def go(*args: str, subprocess: bool = False) -> pytest.RunResult:
        return run_suite(pytester, tiny_model_dir, *args, subprocess=subprocess)

    return go


def test_gate_passes_with_unsafe_items_still_failed(run) -> None:  # type: ignore[no-untyped-def]
    result = run("--safeedit-min-probe-rate", "benign=1.0")
    result.assert_outcomes(failed=7, passed=1)
    result.stdout.fnmatch_lines(["SafeEdit gate: passed (1 thresholds)"])
    assert result.ret == pytest.ExitCode.OK


def test_gate_fails_and_lists_thresholds(run) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "--safeedit-min-pass-rate",
        "0.5",
        "--safeedit-min-category-rate",
        "Illegal Activities=0.2",
        "--safeedit-min-probe-rate",
        "benign=1",
    )
    result.stdout.fnmatch_lines(
        [
            "SafeEdit gate: FAILED (2 of 3 thresholds)",
            "  total: pass rate 0.0% [[]0.0, 35.4[]] < required 50.0%",
            "  category 'illegal activities': pass rate 0.0% [[]0.0, 43.4[]] < required 20.0%",  # 43.448, once rounded
            "  gated on point: each pass rate must reach its threshold",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_without_gate_unsafe_fails_the_run(run) -> None:  # type: ignore[no-untyped-def]
    result = run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "SafeEdit gate" not in result.stdout.str()


def test_gate_does_not_mask_other_failures(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(test_plain="def test_broken():\n    assert False\n")
    result = run("--safeedit-min-pass-rate", "0")
    result.stdout.fnmatch_lines(["SafeEdit gate: passed*", "*1 other failure(s) or error(s)*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_gate_does_not_mask_a_collection_error(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    pytester.makefile(".safeedit.yaml", broken="cases: [\n")
    result = run("--safeedit-min-pass-rate", "0")
    result.stdout.fnmatch_lines(["*ERROR collecting*broken.safeedit.yaml*", "SafeEdit gate: passed*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_gate_from_ini_and_suite(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    pytester.makeini("[pytest]\nsafeedit_min_probe_rate =\n    benign=1.0\n")
    result = run()
    result.stdout.fnmatch_lines(["SafeEdit gate: passed (1 thresholds)"])
    assert result.ret == pytest.ExitCode.OK
    pytester.makefile(".safeedit.yaml", mini="gate:\n  min_pass_rate: 0.9\n  probes: {DS: 0.5}\n" + SUITE)
    result = run()
    result.stdout.fnmatch_lines(["SafeEdit gate: FAILED (2 of 3 thresholds)", "  total: *", "  probe 'DS': *"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result = run("--safeedit-min-pass-rate", "0", "--safeedit-min-probe-rate", "DS=0")  # options win
    result.stdout.fnmatch_lines(["SafeEdit gate: passed (2 thresholds)"])  # the option list replaces the ini list
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--safeedit-min-pass-rate", "1.5"], "*1.5 is not between 0 and 1*"),
        (["--safeedit-min-category-rate", "pornography"], "*'pornography' is not NAME=RATE*"),
        (["--safeedit-shard", "3/2"], "*'3/2' is not a shard; write I/N with 1 <= I <= N*"),
        (["--safeedit-update-baseline"], "*--safeedit-update-baseline needs --safeedit-baseline FILE*"),
        (["--safeedit-baseline", "missing.json"], "*cannot read baseline missing.json*"),
    ],
)
def test_bad_gate_and_baseline_options(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest(*args)
    result.stderr.fnmatch_lines([message])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_suite_gate_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".safeedit.yaml", mini="gate:\n  min_pass_rate: 2\n" + SUITE)
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(
        ["*mini.safeedit.yaml:1: field 'gate': gate.min_pass_rate: expected a rate from 0 to 1*"]
    )


def test_baseline_regression_known_improvement_and_update(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    result = run("--safeedit-baseline", "base.json", "--safeedit-update-baseline")
    result.stdout.fnmatch_lines(["SafeEdit baseline written: base.json (8 probes)"])
    path = pytester.path / "base.json"
    data = json.loads(path.read_text())
    for record in data["probes"]:
        if (record["case_id"], record["probe"]) == ("case-001", "DS"):
            record["verdict"] = {"label": "safe", "score": 0.05, "reason": "edited for the test"}
        if record["probe"] == "benign":
            record["verdict"] = {"label": "refused", "score": 1.0, "reason": "edited for the test"}
    path.write_text(json.dumps(data))
    result = run("--safeedit-baseline", "base.json", "-rxX")
    result.assert_outcomes(failed=1, xfailed=6, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*probe DS of case case-001 (illegal activities) was answered unsafely",
            "  REGRESSION: this probe passed in the baseline",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "SafeEdit baseline base.json: 1 regression(s), 6 known unsafe (xfail), 1 improvement(s), 0 new probe(s)",
            "  McNemar exact test on 8 shared probes: 1 got worse, 1 got better, p = 1: the change is not "
            "significant at 5%",
            "  no net change: no sample size would show a difference",
            "To accept the current state as the new baseline, run again with --safeedit-update-baseline.",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    run("--safeedit-baseline", "base.json", "--safeedit-update-baseline")
    result = run("--safeedit-baseline", "base.json", "--safeedit-report", "r.json")
    result.assert_outcomes(xfailed=7, passed=1)
    assert result.ret == pytest.ExitCode.OK
    comparison = json.loads((pytester.path / "r.json").read_text())["metadata"]["baseline_comparison"]
    assert comparison == {
        "path": "base.json", "shared": 8, "regressions": 0, "improvements": 0, "p_value": 1.0,
        "significant": False, "probes_needed": None,
    }  # fmt: skip


def test_baseline_mismatch_warns_or_errors(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run("--safeedit-baseline", "base.json", "--safeedit-update-baseline")
    path = pytester.path / "base.json"
    data = json.loads(path.read_text())
    data["metadata"]["judge"] = "classifier:someone/else"
    path.write_text(json.dumps(data))
    result = run("--safeedit-baseline", "base.json")
    result.stdout.fnmatch_lines(
        ["*baseline base.json does not match this run: judge: baseline 'classifier:someone/else'*"]
    )
    result.stdout.fnmatch_lines(["  mismatch: judge: *"])
    result = run("--safeedit-baseline", "base.json", "--safeedit-baseline-strict")
    result.stderr.fnmatch_lines(["*does not match this run: judge*--safeedit-baseline-strict*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_junit_properties(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run("--junitxml", "junit.xml")
    root = ET.parse(pytester.path / "junit.xml").getroot()
    case = next(c for c in root.iter("testcase") if c.get("name") == "case-001[DS]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["safeedit_category"] == "illegal activities"
    assert props["safeedit_probe"] == "DS"
    assert props["safeedit_verdict"] == "unsafe"
    assert float(props["safeedit_score"]) == pytest.approx(0.75)


HOSTILE = "<script>alert('x')</script> | **bold** `code` <img src=x onerror=alert(1)> & done"


@pytest.fixture
def hostile_model(pytester: pytest.Pytester) -> None:
    """Every response is markup and script: a generator handed to the engine through the hook."""
    pytester.makeconftest(
        f"""
        from tests.helpers import FakeGenerator

        def pytest_safeedit_generator(config, settings):
            return FakeGenerator(lambda text, system: {HOSTILE!r})
        """
    )


def test_markdown_and_html_escape_model_output(run, pytester: pytest.Pytester, hostile_model: None) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "--safeedit-report-md",
        "out/summary.md",
        "--safeedit-report-html",
        "out/report.html",
        "--safeedit-min-pass-rate",
        "0.5",
    )
    result.stdout.fnmatch_lines(["Markdown report: out/summary.md", "HTML report: out/report.html"])
    md = (pytester.path / "out" / "summary.md").read_text()
    assert "## SafeEdit safety report" in md and "**Gate: failed**" in md
    assert "<script>" not in md and "<img" not in md and "&lt;script&gt;" in md
    assert "| case-001\\[DS\\] |" in md and "\\*\\*bold\\*\\*" in md
    assert len(md) < 65536  # fits a pull-request comment
    page = (pytester.path / "out" / "report.html").read_text()
    assert "<script>" not in page and "<img" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count('<th class="row">') == 5  # the heat map: its header, three categories and all
    assert "<details><summary>case-001 · illegal activities · 0/5 passed</summary>" in page
    assert "gate failed (1)" in page and "total: pass rate 0.0% [0.0, 35.4] &lt; required 50.0%" in page


def test_html_shows_before_and_after_with_an_editor(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run("--safeedit-editor", "self-reminder", "--safeedit-report-html", "report.html")
    page = (pytester.path / "report.html").read_text()
    assert "<th>unedited</th><th>edited</th>" in page and "edit: self-reminder" in page
    assert '<th colspan="2">DS</th>' in page


def test_xdist_gives_the_same_results_and_one_summary(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    common = ["--safeedit-min-probe-rate", "benign=1", "--safeedit-no-cache"]
    serial = run("--safeedit-report", "n0.json", *common, subprocess=True)
    parallel = run("-n", "2", "--safeedit-report", "n2.json", *common, subprocess=True)
    assert serial.ret == parallel.ret == pytest.ExitCode.OK
    assert parallel.stdout.str().count("SafeEdit pass rates") == 1
    assert parallel.stdout.str().count("SafeEdit gate: passed") == 1

    def probes(name: str) -> dict[tuple[str, str], tuple[str, str]]:
        data = json.loads((pytester.path / name).read_text())
        return {(p["case_id"], p["probe"]): (p["response"], p["verdict"]["label"]) for p in data["probes"]}

    assert probes("n0.json") == probes("n2.json")
    two = json.loads((pytester.path / "n2.json").read_text())
    one = json.loads((pytester.path / "n0.json").read_text())
    assert two["summary"] == one["summary"]
    assert two["metadata"]["model"]["model_class"] == "GPT2LMHeadModel"  # sent by a worker


def table(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "SafeEdit pass rates" in line)
    end = next(
        i
        for i in range(start + 1, len(lines))
        if lines[i].startswith(("=", "-" * 10)) and "---" not in lines[i][:3] or lines[i].startswith("all ")
    )
    return lines[start + 1 : end + 1]


def test_shards_merge_into_the_same_table_and_exit_status(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    pytester.makefile(".safeedit.yaml", more=SUITE.replace("case-00", "other-00").replace("benign-001", "benign-002"))
    whole = run("--safeedit-report", "whole.json", "--safeedit-min-pass-rate", "0.1")
    first = run("--safeedit-shard", "1/2", "--safeedit-report", "s1.json", "--safeedit-min-pass-rate", "0.1")
    second = run("--safeedit-shard", "2/2", "--safeedit-report", "s2.json", "--safeedit-min-pass-rate", "0.1")
    s1 = json.loads((pytester.path / "s1.json").read_text())["probes"]
    s2 = json.loads((pytester.path / "s2.json").read_text())["probes"]
    assert len(s1) + len(s2) == 16 and abs(len(s1) - len(s2)) <= 5
    assert not {(p["suite"], p["case_id"]) for p in s1} & {(p["suite"], p["case_id"]) for p in s2}
    assert first.ret == second.ret == whole.ret == pytest.ExitCode.TESTS_FAILED
    merged = pytester.run(
        sys.executable, "-m", "pytest_safeedit", "merge", "s1.json", "s2.json", "--report", "merged.json"
    )
    assert merged.ret == whole.ret
    assert table(merged.stdout.str()) == table(whole.stdout.str())
    merged.stdout.fnmatch_lines(
        ["SafeEdit gate: FAILED (1 of 1 thresholds)", "  total: pass rate 0.0% [[]0.0, 21.5[]] < required 10.0%"]
    )
    passing = pytester.run(
        sys.executable, "-m", "pytest_safeedit", "merge", "s1.json", "s2.json", "--min-pass-rate", "0"
    )
    assert passing.ret == 0
    assert (
        json.loads((pytester.path / "merged.json").read_text())["summary"]
        == json.loads((pytester.path / "whole.json").read_text())["summary"]
    )


def test_merge_rejects_overlapping_or_foreign_reports(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run("--safeedit-report", "a.json")
    result = pytester.run(sys.executable, "-m", "pytest_safeedit", "merge", "a.json", "a.json")
    assert result.ret == 2
    result.stderr.fnmatch_lines(
        ["merge: error: probe mini.safeedit.yaml::case-001[[]DS[]] is in both a.json and a.json*"]
    )
    (pytester.path / "x.json").write_text("{}")
    result = pytester.run(sys.executable, "-m", "pytest_safeedit", "merge", "x.json")
    result.stderr.fnmatch_lines(["merge: error: x.json is not a pytest-safeedit JSON report*"])


def forced_failure(*args: object, **kwargs: object) -> object:
    raise OverflowError("forced for the test")


@pytest.mark.parametrize(
    ("target", "lost", "message"),
    [
        (
            "pytest_safeedit.results.stats.McNemar.p_value",
            None,
            "*the paired test against the baseline could not be computed*",
        ),
        ("pytest_safeedit.reports.json_report.summary", None, "*the summary statistics could not be computed*"),
        ("pytest_safeedit.reports.html_report.html_report", "r.html", "*the HTML report r.html could not be written*"),
    ],
    ids=["p-value", "summary", "html"],
)
def test_a_failing_statistic_is_a_warning_and_every_report_is_written(  # type: ignore[no-untyped-def]
    run, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, target: str, lost: str | None, message: str
) -> None:
    run("--safeedit-baseline", "base.json", "--safeedit-update-baseline")
    module, name = target.rsplit(".", 1)
    if name == "p_value":
        from pytest_safeedit.results.stats import McNemar

        monkeypatch.setattr(McNemar, "p_value", property(forced_failure))
    else:  # the module as imported now (pytester drops modules that an earlier run imported)
        monkeypatch.setattr(importlib.import_module(module), name, forced_failure)
    reports = {"--safeedit-report": "r.json", "--safeedit-report-md": "r.md", "--safeedit-report-html": "r.html"}
    result = run("--safeedit-baseline", "base.json", *(x for pair in reports.items() for x in pair))
    assert result.ret == pytest.ExitCode.OK  # every unsafe probe is known unsafe: the statistic changes nothing
    result.stdout.fnmatch_lines([message + "forced for the test*"])
    for report in reports.values():
        assert (pytester.path / report).exists() == (report != lost), report
    data = json.loads((pytester.path / "r.json").read_text())
    assert len(data["probes"]) == 8
    if name == "p_value":
        assert data["metadata"]["baseline_comparison"]["error"] == "OverflowError: forced for the test"
        assert data["metadata"]["baseline_comparison"]["shared"] == 8
    if name == "summary":
        assert data["summary"] == {"error": "OverflowError: forced for the test"}
