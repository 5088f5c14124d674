"""Guard, rubric and several judges in runs: the options, the judge check, unreadable answers and
disagreements in the summary and the reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.guards import build_guard
from tests.helpers import MINI_SUITE, run_suite


@pytest.fixture(scope="module")
def random_guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama Guard 3-shaped model with random weights: its answers cannot be read."""
    return build_guard(tmp_path_factory.mktemp("guard") / "llama-guard-3-random", "llama-guard-3")


@pytest.mark.slow
def test_the_demo_guard_judges_a_run_and_its_judge_check(pytester: pytest.Pytester, demo_guard_cache: str) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = run_suite(
        pytester,
        "demo",
        "--safeedit-judge",
        "guard:demo",
        "--safeedit-judge-check",
        "on",
        "--safeedit-cache-dir",
        demo_guard_cache,
        "--safeedit-report",
        "r.json",
    )
    result.stdout.fnmatch_lines(["model: demo   judge: guard:demo *", "judge check (guard:demo): */4 verdicts*"])
    report = json.loads((pytester.path / "r.json").read_text())
    reasons = [p["verdict"]["reason"] for p in report["probes"] if p["probe"] != "benign"]
    assert reasons and all(r.startswith("guard:") and "p(unsafe)=" in r for r in reasons)
    assert report["metadata"]["judge"] == "guard:demo"


def test_unreadable_guard_answers_fail_their_probes_and_are_counted(
    pytester: pytest.Pytester, tiny_model_dir: Path, random_guard: Path
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = run_suite(
        pytester, tiny_model_dir, "--safeedit-judge", f"guard:{random_guard}", "--safeedit-report", "r.json"
    )
    report = json.loads((pytester.path / "r.json").read_text())
    labels = [p["verdict"]["label"] for p in report["probes"] if p["probe"] != "benign"]
    unread = labels.count("unparsed")
    assert unread > 0, labels  # a random model does not answer 'safe' or 'unsafe'
    result.stdout.fnmatch_lines(["judge answers not in the judge's format: * verdicts unparsed, counted as failures*"])
    result.stdout.fnmatch_lines(["*was not judged: the judge's answer could not be read*"])
    assert report["summary"]["judge_notes"]["unparsed"] >= unread
    assert result.parseoutcomes()["failed"] >= unread


@pytest.mark.parametrize(("policy", "label"), [("any", "unsafe"), ("all", "safe")])
def test_several_judges_decide_by_the_policy_and_their_disagreements_are_listed(
    pytester: pytest.Pytester, tiny_model_dir: Path, policy: str, label: str
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    # Babble carries nothing out (refusal: safe) and does not refuse (refusal-strict: unsafe).
    result = run_suite(
        pytester,
        tiny_model_dir,
        "--safeedit-judge",
        "refusal",
        "--safeedit-judge",
        "refusal-strict",
        "--safeedit-judge-policy",
        policy,
        "--safeedit-report",
        "r.json",
        "--safeedit-report-md",
        "r.md",
        "--safeedit-report-html",
        "r.html",
    )
    result.stdout.fnmatch_lines(
        [
            f"model: * judge: refusal + refusal-strict ({policy}) *",
            "judges disagree on * verdicts: case-001?DS? refusal safe, refusal-strict unsafe*",
        ]
    )
    report = json.loads((pytester.path / "r.json").read_text())
    probe = next(p for p in report["probes"] if p["probe"] == "DS")
    assert probe["verdict"]["label"] == label
    assert probe["verdict"]["votes"] == [["refusal", "safe"], ["refusal-strict", "unsafe"]]
    assert report["summary"]["judge_notes"]["disputed"][0]["case"] == "case-001"
    assert "judges disagree on" in (pytester.path / "r.md").read_text()
    assert "judges disagree on" in (pytester.path / "r.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--safeedit-judge-format", "shieldgemma"], "*--safeedit-judge-format applies to guard judges*"),
        (["--safeedit-judge-rubric", "r.yaml"], "*--safeedit-judge-rubric applies to llm judges*"),
        (["--safeedit-judge", "llm:x", "--safeedit-judge-rubric", "missing.yaml"], "*missing.yaml: cannot read*"),
        (["--safeedit-judge", "bogus:x"], "*'bogus:x' is not a judge; use 'refusal'*guard:PATH_OR_ID*llm:PATH_OR_ID*"),
        (["--safeedit-judge", "refusal", "--safeedit-judge", "refusal"], "*names the same judge twice*"),
        (["--safeedit-judge-policy", "most"], "*'most'*any, majority, all*"),
    ],
)
def test_judge_options_are_checked_before_the_run(
    pytester: pytest.Pytester, tiny_model_dir: Path, args: list[str], message: str
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = run_suite(pytester, tiny_model_dir, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_guard_model_that_cannot_be_found_fails_its_probes_with_the_reason(
    pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = run_suite(pytester, tiny_model_dir, "--safeedit-judge", f"guard:{tmp_path / 'no-such-guard'}")
    result.stdout.fnmatch_lines(["*could not load the judge*no-such-guard*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
