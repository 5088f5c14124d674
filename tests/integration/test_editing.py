"""Editors in runs: unknown editors and configs, exact restore over a run, the hook, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import BENIGN, MINI_SUITE, run_suite

WEIGHTS_CONFTEST = """
from pytest_safeedit.plugin.stash import evaluator_key

def prints(model):
    return {n: p.detach().numpy().tobytes() for n, p in model.named_parameters()}

def pytest_collection_finish(session):
    model = session.config.stash[evaluator_key].engine.generator.model.model
    session.config.fingerprint = prints(model)

def pytest_sessionfinish(session):
    model = session.config.stash[evaluator_key].engine.generator.model.model
    print("WEIGHTS IDENTICAL:", prints(model) == session.config.fingerprint)
"""

# ---------------------------------------------------------------------------------------------- runs


def test_unknown_editor_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--safeedit-editor", "rome")
    result.stderr.fnmatch_lines(["*unknown editor 'rome'; known editors: none, dinm, ft-l, routed, self-reminder*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dinm:\n  lrr: 1\n", "*editor 'dinm' has no hyperparameter 'lrr'*"),
        ("dinm:\n  steps: many\n", "*hyperparameter 'steps': expected an integer, got 'many'*"),
        ("- a\n- list\n", "*expected a mapping of editor names to hyperparameters*"),
        ("dinm: 3\n", "*the section 'dinm' must map hyperparameter names to values*"),
        ("dinm: [unclosed\n", "*is not valid YAML*"),
    ],
)
def test_bad_editor_config_file(pytester: pytest.Pytester, text: str, message: str) -> None:
    path = pytester.makefile(".yaml", editor=text)
    result = pytester.runpytest("--safeedit-editor", "dinm", "--safeedit-editor-config", str(path))
    result.stderr.fnmatch_lines([f"*--safeedit-editor-config: {message}"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_missing_editor_config_file_and_config_without_editor(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--safeedit-editor", "dinm", "--safeedit-editor-config", "nope.yaml")
    result.stderr.fnmatch_lines(["*--safeedit-editor-config: cannot read nope.yaml*"])
    pytester.makefile(".yaml", editor="dinm:\n  lr: 0.1\n")
    result = pytester.runpytest("--safeedit-editor-config", "editor.yaml")
    result.stderr.fnmatch_lines(["*--safeedit-editor-config was given without --safeedit-editor*"])


def test_bad_editor_defaults_in_suite_are_collection_errors(pytester: pytest.Pytester) -> None:
    pytester.makefile(".safeedit.yaml", bad="defaults:\n  editor:\n    dinm:\n      lr: fast\n" + MINI_SUITE)
    pytester.makefile(".safeedit.yaml", good=MINI_SUITE)
    result = pytester.runpytest("--safeedit-editor", "dinm", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["*bad.safeedit.yaml: *defaults.editor: editor 'dinm', hyperparameter 'lr': expected a number*"]
    )
    result.stdout.fnmatch_lines(["*7 tests collected, 1 error*"])


def test_dinm_run_restores_every_weight_and_reports(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini="defaults:\n  editor:\n    dinm: {lr: 0.01}\n" + MINI_SUITE)
    pytester.makeconftest(WEIGHTS_CONFTEST)
    result = run_suite(pytester, tiny_model_dir, "--safeedit-editor", "dinm", "--safeedit-report", "r.json", "-s")
    result.stdout.fnmatch_lines(
        [
            "*SafeEdit pass rates: unedited -> dinm*",
            "*model: * editor: dinm   probes: 7",
            "category * DS * all * judge check",
            "illegal activities * -> *",
            "*SafeEdit side effects of dinm*",
            "category * knowledge kept * knowledge F1 * fluency before -> after * steps * edit s * layers",
            "illegal activities * [01]/1 *",
        ]
    )
    result.stdout.fnmatch_lines(["*WEIGHTS IDENTICAL: True*"])
    data = json.loads((pytester.path / "r.json").read_text())
    probe = next(p for p in data["probes"] if p["case_id"] == "case-001" and p["probe"] == "DS")
    assert probe["editor"] == "dinm" and probe["before_verdict"]["label"] in ("safe", "unsafe", "neutral")
    edit = probe["edit"]
    assert edit["module"].startswith("transformer.h.") and edit["steps"] >= 1 and edit["seconds"] > 0
    assert set(edit["losses"]) == {"loss", "nll", "kl"}
    assert probe["side_effects"]["knowledge"]["prompt"] == "What is the capital of France?"
    assert data["metadata"]["editor"] == "dinm"
    assert next(iter(data["metadata"]["editor_hyperparameters"].values()))["lr"] == 0.01
    assert data["summary"]["before"]["total"]["total"] == 7
    assert data["summary"]["side_effects"]["all"]["cases"] == 2


def test_failure_text_shows_edit_details(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = run_suite(pytester, tiny_model_dir, "--safeedit-editor", "dinm", "-k", "case-002 and DS")
    result.stdout.fnmatch_lines(
        [
            "*probe DS of case case-002 (privacy and property) was answered unsafely after the dinm edit",
            "  input: *",
            "  response: *",
            "  verdict: *",
            "  before: *",
            "  edit:     dinm layer * (transformer.h.*.mlp.c_proj), * steps, loss *, nll *, kl *, * s",
        ]
    )


@pytest.mark.parametrize("editor", ["ft-l", "self-reminder"])
def test_baseline_editors_run(pytester: pytest.Pytester, tiny_model_dir: Path, editor: str) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    result = run_suite(pytester, tiny_model_dir, "--safeedit-editor", editor, "--safeedit-report", "r.json")
    result.stdout.fnmatch_lines([f"*SafeEdit pass rates: unedited -> {editor}*"])
    probes = json.loads((pytester.path / "r.json").read_text())["probes"]
    assert {p["editor"] for p in probes} == {editor}
    edit = probes[0]["edit"]
    if editor == "ft-l":
        assert edit["layer"] == 1 and edit["steps"] >= 1
    else:
        assert edit["layer"] is None and edit["steps"] == 0


def test_edit_error_is_reported_on_the_case_and_others_run(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    pytester.makefile(".yaml", editor="ft-l:\n  layer: 7\n")
    result = run_suite(pytester, tiny_model_dir, "--safeedit-editor", "ft-l", "--safeedit-editor-config", "editor.yaml")
    result.assert_outcomes(failed=7, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*SafeEdit: the ft-l edit of case 'case-001' failed: ArchitectureError: ft-l layer 7 is out of range: GPT2LMHeadModel has 2 blocks"
        ]
    )


def test_third_party_editor_through_the_hook(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    pytester.makefile(".yaml", editor="polite:\n  prefix: Kindly\n")
    pytester.makeconftest(
        """
        from contextlib import contextmanager
        from pytest_safeedit.editors.base import EditDetails, EditorSpec

        class Polite:
            name = "polite"
            def __init__(self, prefix):
                self.prefix = prefix
            def prompt(self, text):
                return f"{self.prefix} {text}", None
            @contextmanager
            def edit(self, model, case):
                yield EditDetails(editor=self.name, case_id=case.id, steps=1)

        def pytest_safeedit_editors(config):
            return [EditorSpec("polite", Polite, defaults={"prefix": "Please"})]
        """
    )
    result = pytester.runpytest("--safeedit-editor", "nope")
    result.stderr.fnmatch_lines(["*known editors: none, dinm, ft-l, polite, routed, self-reminder*"])
    result = run_suite(
        pytester,
        tiny_model_dir,
        "--safeedit-editor",
        "polite",
        "--safeedit-editor-config",
        "editor.yaml",
        "--safeedit-report",
        "r.json",
    )
    result.stdout.fnmatch_lines(["*SafeEdit pass rates: unedited -> polite*"])
    probes = json.loads((pytester.path / "r.json").read_text())["probes"]
    assert {p["edit"]["steps"] for p in probes} == {1}
    meta = json.loads((pytester.path / "r.json").read_text())["metadata"]
    assert next(iter(meta["editor_hyperparameters"].values())) == {"prefix": "Kindly"}


def test_routed_run_restores_every_weight_and_reports_its_probe(
    pytester: pytest.Pytester, tiny_model_dir: Path
) -> None:
    benign = BENIGN.replace("mental harm", "illegal activities")
    harmless = benign + benign.replace("benign-001", "benign-002").replace("relax after work", "bake bread")
    pytester.makefile(".safeedit.yaml", mini="defaults:\n  editor:\n    routed: {lr: 0.01}\n" + MINI_SUITE + harmless)
    pytester.makeconftest(WEIGHTS_CONFTEST)
    result = run_suite(
        pytester,
        tiny_model_dir,
        "--safeedit-editor",
        "routed",
        "--safeedit-report",
        "r.json",
        "--safeedit-report-md",
        "r.md",
        "-s",
    )
    result.stdout.fnmatch_lines(
        [
            "*SafeEdit pass rates: unedited -> routed*",
            "*SafeEdit side effects of routed*",
            "category * knowledge kept * harmless consistent * layers * probe acc % * harmless routed % * inputs edited %",
            "all * [0-9]*/[0-9]* (*%) *",
        ]
    )
    result.stdout.fnmatch_lines(["*WEIGHTS IDENTICAL: True*"])
    result.stdout.fnmatch_lines(
        ["  routing:  * of the case's inputs through the edit, * on the original weights (probe on block *"]
    )
    data = json.loads((pytester.path / "r.json").read_text())
    routing = next(p for p in data["probes"] if p["case_id"] == "case-001" and p["probe"] == "DS")["edit"]["routing"]
    assert routing["harmless_inputs"] == 3 and routing["attack_inputs"] == 7
    everything = data["summary"]["side_effects"]["all"]
    assert everything["probe_accuracy"] == routing["probe_accuracy"]
    assert everything["harmless_routed"] == routing["harmless_routed"]
    assert everything["harmless_total"] == 2  # case-001's category has the two benign questions
    assert "probe acc %" in (pytester.path / "r.md").read_text()
