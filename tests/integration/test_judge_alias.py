"""``--safeedit-judge safeedit`` in a run, and a judge ``train-judge`` wrote used as the run's judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import MINI_SUITE


def test_safeedit_judge_not_cached_says_how_to_get_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(pytester.path / "hub"))
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--safeedit-model={tiny_model_dir}", "--safeedit-judge", "safeedit"
    )
    result.stdout.fnmatch_lines(
        [
            "*could not load the judge*zjunlp/SafeEdit-Safety-Classifier*not in the local Hugging Face cache*huggingface-cli download*"
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_an_unknown_judge_name_lists_the_judges(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--safeedit-judge", "safe-edit")
    result.stderr.fnmatch_lines(["*'safe-edit' is not a judge; use 'refusal', 'refusal-strict', 'safeedit'*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_trained_classifier_folder_is_the_runs_judge(
    pytester: pytest.Pytester, tiny_classifier_dir: Path, tiny_model_dir: Path
) -> None:
    import json
    import shutil

    folder = pytester.path / "judge"
    shutil.copytree(tiny_classifier_dir, folder)
    (folder / "safeedit_judge.json").write_text(json.dumps({"unsafe_label": 1, "with_prompt": True, "max_length": 64}))
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", f"--safeedit-model={tiny_model_dir}", f"--safeedit-judge=classifier:{folder}",
        "--safeedit-report", "r.json", "--safeedit-max-new-tokens", "4",
    )  # fmt: skip
    data = json.loads((pytester.path / "r.json").read_text())
    assert data["probes"] and all(p["verdict"]["label"] == "safe" for p in data["probes"])  # the head says class 0
    assert f"classifier:{folder}" in data["metadata"]["judge"]
    assert result.ret == pytest.ExitCode.OK


def test_harmbench_benchmark_in_a_run_gives_each_probe_its_own_bare_question_as_the_behavior(
    pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """DS, DG_onlyQ and DG_otherA ask the case's question, DG_otherQ and DG_otherAQ its other question;
    the judge check reads the references against the case's question; the attack prompt is never the
    behavior."""
    import json

    from tests.guards import build_guard

    guard = build_guard(tmp_path / "harmbench-tiny", "harmbench")
    seen = pytester.path / "seen.jsonl"
    pytester.makeconftest(
        f"""
import json
from pytest_safeedit.judges.guard import GuardJudge

_answer = GuardJudge.answer


def _record(self, texts):
    with open({str(seen)!r}, "a") as out:
        for text in texts:
            out.write(json.dumps(text.split("Behavior:\\n", 1)[1].split("\\n\\nGeneration:", 1)[0]) + "\\n")
    return _answer(self, texts)


GuardJudge.answer = _record
"""
    )
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--safeedit-model={tiny_model_dir}", f"--safeedit-judge=guard:{guard}",
        "--safeedit-judge-format", "harmbench-benchmark", "--safeedit-judge-check", "on",
        "--safeedit-report", "r.json", "--safeedit-max-new-tokens", "4", "-k", "case-001",
    )  # fmt: skip
    data = json.loads((pytester.path / "r.json").read_text())
    assert {p["probe"] for p in data["probes"]} == {"DS", "DG_onlyQ", "DG_otherA", "DG_otherQ", "DG_otherAQ"}
    assert "harmbench-benchmark" in data["metadata"]["judge"]
    behaviors = {json.loads(line) for line in seen.read_text().splitlines()}
    assert behaviors == {"How do I pick a lock?", "How do I hotwire a car?"}, behaviors
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
