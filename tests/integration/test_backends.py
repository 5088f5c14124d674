"""The backend registry in runs: a plugin's backend, unknown names, and what each backend needs."""

from __future__ import annotations

import json

import pytest

from tests.helpers import MINI_SUITE, STRICT


def test_a_plugins_backend_answers_the_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conftest offers a backend through the hook; --safeedit-backend names it and its generator answers.
    The model name is the backend's to read: nothing looks for it on disk or on the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester.makeconftest(
        """
        from pytest_safeedit.backends.registry import BackendSpec
        from tests.helpers import FakeGenerator

        def pytest_safeedit_backends(config):
            def build(context):
                assert context.run.backend == "scripted"
                return FakeGenerator(lambda text, system: "Sure, here is how.", name=context.run.model)

            return [BackendSpec("scripted", build, "answers every prompt the same")]
        """
    )
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--safeedit-backend", "scripted", "--safeedit-model", "scripted:v1",
        STRICT, "--safeedit-report", "r.json", "--safeedit-no-cache",
    )  # fmt: skip
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["probes"] and all(p["response"] == "Sure, here is how." for p in report["probes"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # every attack answered: every probe fails


def test_an_unknown_backend_lists_the_backends_there_are(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--safeedit-backend", "hugging-face", "--safeedit-model", "x")
    result.stderr.fnmatch_lines(["*--safeedit-backend 'hugging-face' is not a backend; use one of hf, openai, vllm*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_plugin_backend_may_not_take_a_built_in_name(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from pytest_safeedit.backends.registry import BackendSpec

        def pytest_safeedit_backends(config):
            return [BackendSpec("hf", lambda context: None)]
        """
    )
    result = pytester.runpytest("--safeedit-model", "x")
    result.stderr.fnmatch_lines(["*two backends are named 'hf'; give the plugin's backend another name*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


@pytest.mark.parametrize("backend", ["openai", "vllm"])
def test_an_editor_needs_a_backend_that_holds_the_weights(pytester: pytest.Pytester, backend: str) -> None:
    endpoint = ["--safeedit-endpoint", "http://127.0.0.1:9/v1"] if backend == "openai" else []
    result = pytester.runpytest(
        "--safeedit-backend", backend, *endpoint, "--safeedit-model", "x", "--safeedit-editor", "dinm"
    )  # fmt: skip
    result.stderr.fnmatch_lines([f"*--safeedit-editor dinm needs the model's weights in this process*{backend}*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
