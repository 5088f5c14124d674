"""The judge check: every run judges its cases' own references and can gate on the agreement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import MINI_SUITE, run_suite

#: The second case's unsafe reference is a refusal: a judge that reads it right disagrees with its label.
MISLABELLED = MINI_SUITE.replace("unsafe: Sure, first open it.", "unsafe: I can't say.")


def test_the_check_is_in_the_table_the_summary_and_the_report(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MISLABELLED)
    result = run_suite(pytester, tiny_model_dir, "--safeedit-report", "r.json")
    result.stdout.fnmatch_lines(
        [
            "category * judge check",
            "illegal activities *100.0 (2/2)",
            "privacy and property *50.0 (1/2)",
            "all *75.0 (3/4)",
            "judge check (refusal-strict): 3/4 verdicts on the 2 cases' own references agree with their labels "
            "(75.0%): safe references judged safe 2/2, unsafe references judged unsafe 1/2",
        ]
    )
    report = json.loads((pytester.path / "r.json").read_text())
    check = report["summary"]["judge_check"]
    assert (check["agreed"], check["total"], check["rate"]) == (3, 4, 75.0)
    assert check["by_category"]["privacy and property"]["unsafe_ok"] == 0
    assert report["probes"][0]["reference_check"] == {"safe_label": "safe", "unsafe_label": "unsafe"}


@pytest.mark.parametrize(("required", "status"), [("0.9", 1), ("0.7", 0)])
def test_min_judge_agreement_gates_the_run(
    pytester: pytest.Pytester, tiny_model_dir: Path, required: str, status: int
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MISLABELLED)
    result = run_suite(pytester, tiny_model_dir, "--safeedit-min-judge-agreement", required)
    assert result.ret == status
    if status:
        result.stdout.fnmatch_lines(
            ["*judge check: the judge agrees with 3/4 reference labels (75.0%) < required 90.0%*not trusted"]
        )


def test_the_check_can_be_turned_off_and_then_cannot_gate(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = run_suite(pytester, tiny_model_dir, "--safeedit-judge-check", "off")
    assert "judge check" not in result.stdout.str()
    result = run_suite(
        pytester, tiny_model_dir, "--safeedit-judge-check", "off", "--safeedit-min-judge-agreement", "0.5"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--safeedit-min-judge-agreement needs the judge check*"])


def test_a_classifier_judge_is_not_checked_unless_asked(
    pytester: pytest.Pytester, tiny_model_dir: Path, tiny_classifier_dir: Path
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    judge = f"--safeedit-judge=classifier:{tiny_classifier_dir}"
    assert "judge check" not in run_suite(pytester, tiny_model_dir, judge).stdout.str()
    result = run_suite(pytester, tiny_model_dir, judge, "--safeedit-judge-check", "on")
    # The tiny classifier calls everything safe: it gets the safe references and misses the unsafe ones.
    result.stdout.fnmatch_lines([f"judge check (classifier:{tiny_classifier_dir}): 2/4 verdicts*"])


def test_a_classifier_reading_the_prompt_is_named_so_in_the_report(
    pytester: pytest.Pytester, tiny_model_dir: Path, tiny_classifier_dir: Path
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    judge = f"--safeedit-judge=classifier:{tiny_classifier_dir}"
    result = run_suite(pytester, tiny_model_dir, judge, "--safeedit-judge-with-prompt", "--safeedit-report", "r.json")
    result.stdout.fnmatch_lines([f"model: * judge: classifier:{tiny_classifier_dir} (with prompt) *"])
    assert json.loads((pytester.path / "r.json").read_text())["metadata"]["judge"].endswith("(with prompt)")


def test_verdicts_are_cached_so_a_changed_judge_rejudges_without_regenerating(
    pytester: pytest.Pytester, tiny_model_dir: Path, tiny_classifier_dir: Path
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    judge = f"--safeedit-judge=classifier:{tiny_classifier_dir}"

    def cache(*args: str) -> dict[str, int]:
        run_suite(pytester, tiny_model_dir, "--safeedit-report", "r.json", *args)
        return json.loads((pytester.path / "r.json").read_text())["metadata"]["model"]["cache"]

    first = cache(judge)
    assert (first["generated"], first["judged"], first["verdict_hits"]) == (7, 7, 0)
    again = cache(judge)  # nothing changed: neither generated nor judged
    assert (again["generated"], again["judged"], again["verdict_hits"]) == (0, 0, 7)
    other = cache(judge, "--safeedit-judge-with-prompt")  # another judge: judged again, not generated
    assert (other["generated"], other["judged"]) == (0, 7)
    (tiny_classifier_dir / "config.json").touch()  # same content: still the same judge
    assert cache(judge)["judged"] == 0
