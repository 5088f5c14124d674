"""Judges chosen on the command line, in runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import MINI_SUITE


def test_classifier_judge_from_command_line(
    pytester: pytest.Pytester, tiny_model_dir: Path, tiny_classifier_dir: Path
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    args = ["--safeedit-model", str(tiny_model_dir), "--safeedit-max-new-tokens", "4"]
    judge = f"classifier:{tiny_classifier_dir}"
    result = pytester.runpytest(*args, "--safeedit-judge", judge)
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines([f"*judge: {judge}*"])
    result = pytester.runpytest(*args, "--safeedit-judge", judge, "--safeedit-judge-unsafe-labels", "0")
    result.assert_outcomes(failed=7)
    result.stdout.fnmatch_lines(["*verdict:  unsafe (unsafe score 0.98*"])


def test_bad_judge_spec_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--safeedit-judge", "keywords")
    result.stderr.fnmatch_lines(
        [
            "*'keywords' is not a judge; use 'refusal', 'refusal-strict', 'safeedit'*'classifier:PATH_OR_ID'*guard:PATH_OR_ID*"
        ]
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_missing_classifier_errors_every_probe(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    result = pytester.runpytest(
        "--safeedit-model",
        str(tiny_model_dir),
        "--safeedit-max-new-tokens",
        "4",
        "--safeedit-judge",
        f"classifier:{pytester.path / 'missing'}",
    )
    result.assert_outcomes(failed=7, passed=1)
    result.stdout.fnmatch_lines(["*SafeEdit: could not load the judge: *"])
