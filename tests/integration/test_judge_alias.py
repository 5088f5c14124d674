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


def test_harmbench_benchmark_format_is_refused_in_runs_until_questions_reach_judges(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--safeedit-judge", "guard:x", "--safeedit-judge-format", "harmbench-benchmark")
    result.stderr.fnmatch_lines(
        ["*harmbench-benchmark needs each probe's bare question*use --safeedit-judge-format harmbench*"]
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
