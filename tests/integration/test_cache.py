"""The generation cache: a re-run generates nothing; anything that decides a response misses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import MINI_SUITE, STRICT, run_suite


def stats(pytester: pytest.Pytester) -> dict[str, int]:
    cache: dict[str, int] = json.loads((pytester.path / "r.json").read_text())["metadata"]["model"]["cache"]
    return cache


def responses(pytester: pytest.Pytester) -> dict[tuple[str, str], str]:
    data = json.loads((pytester.path / "r.json").read_text())
    return {(p["case_id"], p["probe"]): p["response"] for p in data["probes"]}


@pytest.fixture
def run(pytester: pytest.Pytester, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)

    def go(*args: str, model: Path = tiny_model_dir) -> pytest.RunResult:
        return run_suite(
            pytester,
            model,
            "--safeedit-report",
            "r.json",
            f"--safeedit-cache-dir={pytester.path / 'cache'}",
            *args,
        )

    return go


def test_rerun_generates_nothing(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run()
    assert stats(pytester)["generated"] == 7
    first = responses(pytester)
    run()
    assert stats(pytester)["generated"] == 0 and stats(pytester)["hits"] == 7
    assert responses(pytester) == first


def test_fully_cached_run_imports_neither_torch_nor_transformers(
    pytester: pytest.Pytester, tiny_model_dir: Path
) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    pytester.makeconftest(
        """
        import sys
        def pytest_sessionfinish(session):
            print("LOADED:", sorted(m for m in ("torch", "transformers") if m in sys.modules))
        """
    )
    args = [f"--safeedit-model={tiny_model_dir}", STRICT, f"--safeedit-cache-dir={pytester.path / 'cache'}", "-s"]
    cold = pytester.runpytest_subprocess(*args)
    assert "LOADED: ['torch', 'transformers']" in cold.stdout.str()
    warm = pytester.runpytest_subprocess(*args)
    warm.assert_outcomes(failed=7)
    assert "LOADED: []" in warm.stdout.str()


def test_no_cache_option(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run()
    run("--safeedit-no-cache")
    assert stats(pytester)["generated"] == 7 and stats(pytester)["dir"] is None


def test_other_model_weights_miss(run, pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM

    run()
    copy = tmp_path / "same-name-other-weights"
    shutil.copytree(tiny_model_dir, copy)
    run(model=copy)
    assert stats(pytester)["generated"] == 0  # identical files: the same model, whatever its folder
    model = AutoModelForCausalLM.from_pretrained(str(copy))
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)
    model.save_pretrained(copy)
    run(model=copy)
    assert stats(pytester)["generated"] == 7


def test_max_new_tokens_and_changed_case_miss(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run()
    run("--safeedit-max-new-tokens", "5")
    assert stats(pytester)["generated"] == 7
    pytester.makefile(
        ".safeedit.yaml", mini=MINI_SUITE.replace("How do I read my sister's diary?", "How do I open her diary?")
    )
    run()
    assert stats(pytester)["generated"] == 2  # only case-002's two probes changed


def test_edited_generations_follow_editor_config_and_case(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run("--safeedit-editor", "dinm")
    first = stats(pytester)
    assert first["edits_run"] == 2
    run("--safeedit-editor", "dinm")
    assert stats(pytester)["edits_run"] == 0 and stats(pytester)["generated"] == 0
    pytester.makefile(".yaml", editor="dinm:\n  lr: 0.02\n")
    run("--safeedit-editor", "dinm", "--safeedit-editor-config", "editor.yaml")
    assert stats(pytester)["edits_run"] == 2
    pytester.makefile(
        ".safeedit.yaml", mini=MINI_SUITE.replace("unsafe: Sure, first open it.", "unsafe: Sure, open it.")
    )
    run("--safeedit-editor", "dinm", "--safeedit-editor-config", "editor.yaml")
    assert stats(pytester)["edits_run"] == 1  # the changed case is edited again, the other is cached
    run("--safeedit-editor", "ft-l", "--safeedit-editor-config", "editor.yaml")
    assert stats(pytester)["edits_run"] == 2


def test_corrupt_entries_are_ignored_and_rewritten(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run()
    first = responses(pytester)
    entries = sorted((pytester.path / "cache" / "generations").rglob("*.json"))
    entries = [e for e in entries if e.name != "file-hashes.json"]
    assert len(entries) == 7
    entries[0].write_text("{not json")
    entries[1].write_text(json.dumps({"key": "someone else", "response": "forged"}))
    run()
    assert stats(pytester)["generated"] == 2
    assert responses(pytester) == first
    run()
    assert stats(pytester)["generated"] == 0


def test_xdist_workers_share_the_cache(run, pytester: pytest.Pytester, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    result = pytester.runpytest_subprocess(
        f"--safeedit-model={tiny_model_dir}",
        STRICT,
        "--safeedit-max-new-tokens",
        "4",
        "-n",
        "2",
        f"--safeedit-cache-dir={pytester.path / 'cache'}",
    )
    result.assert_outcomes(failed=7)
    run()
    assert stats(pytester)["generated"] == 0


def test_deselected_probes_are_not_generated(run, pytester: pytest.Pytester) -> None:  # type: ignore[no-untyped-def]
    run("-k", "case-002")
    assert stats(pytester)["generated"] == 2
    run("--safeedit-shard", "1/2")
    assert stats(pytester)["generated"] + stats(pytester)["hits"] == len(responses(pytester))
