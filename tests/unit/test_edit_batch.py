"""Several cases' edits answered in one batch equal each edit answered alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.dinm import DINM, DINM_SPEC, FTL, FTL_SPEC
from pytest_safeedit.engine import EditFailed, Engine
from pytest_safeedit.generation import Request
from pytest_safeedit.settings import GenerationSettings, RunSettings
from pytest_safeedit.suite_files import load_suite
from pytest_safeedit.tiny import build_tiny_model
from tests.helpers import SAMPLE_SUITE, ending_token, record_batch_rows


def engine_for(path: Path) -> Engine:
    return Engine(RunSettings(model=str(path), no_cache=True))


def items(count: int, batch_size: int = 32) -> list[tuple[Any, list[Request]]]:
    settings = GenerationSettings(max_new_tokens=6, batch_size=batch_size)
    cases = [c for c in load_suite(SAMPLE_SUITE).cases if not c.benign][:count]
    return [(c, [Request(p.text + " Answer:", None, settings) for p in c.probes]) for c in cases]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("editor", ["dinm", "ft-l"])
def test_edits_answered_together_equal_edits_answered_alone(
    kind: str, editor: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    path = build_tiny_model(tmp_path / kind, kind, AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    chosen = (
        DINM(**{**DINM_SPEC.defaults, "lr": 0.05}) if editor == "dinm" else FTL(**{**FTL_SPEC.defaults, "lr": 0.05})
    )
    group = items(4)
    together_engine = engine_for(path)
    together = together_engine.generate_edited_group(chosen, {}, group)
    alone_engine = engine_for(path)
    alone = [alone_engine.generate_edited(chosen, {}, case, requests) for case, requests in group]
    assert [o[1] for o in together] == [o[1] for o in alone]  # type: ignore[index]
    assert [o[0].layer for o in together] == [o[0].layer for o in alone]  # type: ignore[union-attr]
    assert together_engine.edits_run == 4 and together_engine.generated == sum(len(r) for _, r in group)
    # The edited models differ from the unedited one, and from each other's answers somewhere.
    unedited = together_engine.generate([r.text for r in group[0][1]], max_new_tokens=6)
    assert unedited != together[0][1]  # type: ignore[index]


def test_a_failing_edit_in_a_group_fails_only_its_case(tiny_model_dir: Path) -> None:
    class Failing(DINM):
        def choose_layer(self, model: Any, case: Any, details: Any) -> int:
            if case.id.endswith("002"):
                raise RuntimeError("boom")
            return super().choose_layer(model, case, details)

    editor = Failing(**DINM_SPEC.defaults)
    engine = engine_for(tiny_model_dir)
    outcomes = engine.generate_edited_group(editor, {}, items(3))
    assert [isinstance(o, EditFailed) for o in outcomes] == [False, True, False]
    assert "boom" in str(outcomes[1])


def test_small_batches_split_a_group_into_several_generations(tiny_model_dir: Path) -> None:
    editor = DINM(**{**DINM_SPEC.defaults, "lr": 0.05})
    small = [(c, [replace(r, settings=replace(r.settings, batch_size=3)) for r in rs]) for c, rs in items(2)]
    together = engine_for(tiny_model_dir).generate_edited_group(editor, {}, small)
    alone = engine_for(tiny_model_dir)
    assert [o[1] for o in together] == [alone.generate_edited(editor, {}, c, r)[1] for c, r in small]  # type: ignore[index]


def test_rows_that_end_early_keep_their_own_edited_weight(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generation drops the rows that have ended; the rows left still get their own cases' weights."""
    import json

    from transformers import AutoTokenizer

    import pytest_safeedit.hf as hf
    from pytest_safeedit.hf import load_model
    from pytest_safeedit.settings import ModelSettings

    path = build_tiny_model(tmp_path / "llama", "llama", AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    group = items(4)
    for _, requests in group:
        requests[:] = [replace(r, settings=replace(r.settings, max_new_tokens=12)) for r in requests]
    model = load_model(ModelSettings(str(path)))
    prompts = [model.format_prompt(r.text, max_new_tokens=12) for _, rs in group for r in rs]
    config = json.loads((path / "generation_config.json").read_text())
    config["eos_token_id"] = ending_token(model, prompts, 12)
    (path / "generation_config.json").write_text(json.dumps(config))
    editor = DINM(**{**DINM_SPEC.defaults, "lr": 0.05})
    monkeypatch.setattr(hf, "PRUNE_EVERY", 1)
    rows = record_batch_rows(monkeypatch, model)
    together = engine_for(path).generate_edited_group(editor, {}, group)
    assert rows[0] == 20 and min(rows) < 20, "rows that ended should have left the batch"
    alone_engine = engine_for(path)
    alone = [alone_engine.generate_edited(editor, {}, case, requests)[1] for case, requests in group]
    assert [o[1] for o in together] == alone  # type: ignore[index]
