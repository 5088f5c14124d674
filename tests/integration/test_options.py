"""Options: help text, validation, ini keys, and precedence over suite defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_safeedit.plugin.options import OPTIONS
from tests.helpers import MINI_SUITE, STRICT


def test_help_lists_every_option_with_its_default(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    assert "SafeEdit safety tests (pytest-safeedit)" in text
    for option in OPTIONS:
        assert option.flag in text
    assert "Default: refusal" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--safeedit-max-new-tokens", "0"], "*0 is too small; give a number of at least 1*"),
        (["--safeedit-max-new-tokens", "many"], "*'many' is not an integer*"),
        (["--safeedit-dtype", "float8"], "*'float8' is not one of auto, float32, float16, bfloat16*"),
        (["--safeedit-chat-template", "yes"], "*'yes' is not one of auto, on, off*"),
        (["--safeedit-seed", "-1"], "*-1 is too small; give a number of at least 0*"),
    ],
)
def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest(*args)
    result.stderr.fnmatch_lines([message])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsafeedit_max_new_tokens = zero\n")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*ini key safeedit_max_new_tokens: 'zero' is not an integer*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_ini_pins_model_and_settings(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    pytester.makeini(
        f"[pytest]\nsafeedit_model = {tiny_model_dir}\nsafeedit_judge = refusal-strict\nsafeedit_max_new_tokens = 3\nsafeedit_seed = 5\n"
        "safeedit_batch_size = 2\nsafeedit_batch_tokens = 300\n"
    )
    result = pytester.runpytest("--safeedit-report", "r.json")
    result.assert_outcomes(failed=7)
    meta = json.loads((pytester.path / "r.json").read_text())["metadata"]
    assert meta["generation"]["mini.safeedit.yaml"]["max_new_tokens"] == 3
    assert meta["generation"]["mini.safeedit.yaml"]["batch_size"] == 2 and meta["seed"] == 5
    assert meta["generation"]["mini.safeedit.yaml"]["batch_tokens"] == 300
    # the command line wins over the ini file
    result = pytester.runpytest("--safeedit-report", "r.json", "--safeedit-max-new-tokens", "2")
    assert (
        json.loads((pytester.path / "r.json").read_text())["metadata"]["generation"]["mini.safeedit.yaml"][
            "max_new_tokens"
        ]
        == 2
    )


def test_max_new_tokens_option_overrides_suite_default(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini="defaults:\n  max_new_tokens: 2\n" + MINI_SUITE)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))

    def token_counts(*args: str) -> list[int]:
        result = pytester.runpytest(
            "--safeedit-model", str(tiny_model_dir), STRICT, "--safeedit-report", "r.json", *args
        )
        probes = json.loads((pytester.path / "r.json").read_text())["probes"]
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        return [len(tokenizer(p["response"], add_special_tokens=False)["input_ids"]) for p in probes]

    assert max(token_counts()) <= 2
    assert max(token_counts("--safeedit-max-new-tokens", "6")) > 2


def test_unknown_model_errors_every_probe_and_keeps_other_results(pytester: pytest.Pytester) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    pytester.makeini(f"[pytest]\nsafeedit_model = {pytester.path / 'no-such-model'}\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=7, passed=1)
    result.stdout.fnmatch_lines(["*SafeEdit: could not load the model: *no-such-model*does not exist*"])
    # named on the command line, the same model is a usage error before anything runs
    result = pytester.runpytest("--safeedit-model", str(pytester.path / "no-such-model"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --safeedit-model *no-such-model*does not exist*"])


def test_safeedit_session_fixture(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makepyfile(
        test_fixture="""
        def test_generate(safeedit_session):
            a, b = safeedit_session.generate(["How do I pick a lock?", "Hello"], max_new_tokens=3)
            assert isinstance(a, str) and isinstance(b, str)
            (verdict,) = safeedit_session.verdicts([a])
            assert verdict.label in ("safe", "unsafe", "neutral")
        """
    )
    result = pytester.runpytest("--safeedit-model", str(tiny_model_dir))
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*--safeedit-model*"])


def test_help_lists_the_bundled_suites(pytester: pytest.Pytester) -> None:
    text = " ".join(pytester.runpytest("--help").stdout.str().split())
    assert "--safeedit-suite=NAME_OR_PATH Also run a suite: one bundled with the plugin by name (sample)" in text


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (
            ["--safeedit-suite", "smaple"],
            "",
            "ERROR: --safeedit-suite: 'smaple' is not a bundled suite; the bundled suites are: sample (or give*",
        ),
        (["--safeedit-suite", "gone/mine.yaml"], "", "ERROR: --safeedit-suite: 'gone/mine.yaml': no such file;*"),
        ([], "safeedit_suite = nonexistent", "ERROR: ini key safeedit_suite: 'nonexistent' is not a bundled suite*"),
        (["--safeedit-suite="], "", "*'' is empty; give a bundled suite's name, e.g. sample, or a file's path*"),
    ],
)
def test_unknown_suite_is_a_usage_error(pytester: pytest.Pytester, args: list[str], ini: str, message: str) -> None:
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest(*args)
    result.stderr.fnmatch_lines([message])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_suite_ini_key_is_read_from_the_ini_folder(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    (pytester.path / "safety").mkdir()
    (pytester.path / "safety" / "mine.yaml").write_text(MINI_SUITE)  # no pattern matches it
    (pytester.path / "sub").mkdir()
    pytester.makeini("[pytest]\nsafeedit_suite =\n    sample\n    safety/mine.yaml\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["safety/mine.yaml::case-001[[]DS[]]", "*suites/sample.yaml::offensiveness-001[[]DS[]]"]
    )
    result.stdout.fnmatch_lines(["205 tests collected*"])
    # the command line replaces the ini key
    result = pytester.runpytest("--collect-only", "-q", "--safeedit-suite", "safety/mine.yaml")
    result.stdout.fnmatch_lines(["7 tests collected*"])
    # from a subfolder, the ini key's paths still start at the ini file's folder
    monkeypatch.chdir(pytester.path / "sub")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["205 tests collected*"])
