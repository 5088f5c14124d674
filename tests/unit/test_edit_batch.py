"""Several cases' edits answered in one batch equal each edit answered alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.backends.base import Request
from pytest_safeedit.backends.tiny import build_tiny_model
from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.config.settings import GenerationSettings, RunSettings
from pytest_safeedit.editors.dinm import DINM, DINM_SPEC, FTL, FTL_SPEC
from pytest_safeedit.run.engine import EditFailed, Engine
from tests.helpers import SAMPLE_SUITE, ending_token, record_batch_rows, record_prefix_plans


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
    assert [o[0].layer for o in together] == [o[0].layer for o in alone]  # type: ignore[index]
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


def test_rows_sorted_into_token_batches_keep_their_own_edited_weight(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hf backend reorders a group's rows by length into batches of a few tokens: each row still
    runs with its own case's weight."""
    editor = DINM(**{**DINM_SPEC.defaults, "lr": 0.05})
    group = [(c, [replace(r, settings=replace(r.settings, batch_tokens=60)) for r in rs]) for c, rs in items(3)]
    engine = engine_for(tiny_model_dir)
    rows = record_batch_rows(monkeypatch, engine.generator.editable(group[0][1][0].settings))
    together = engine.generate_edited_group(editor, {}, group)
    assert len(rows) > 3 and max(rows) < sum(len(r) for _, r in group)  # several batches
    alone = engine_for(tiny_model_dir)
    assert [o[1] for o in together] == [alone.generate_edited(editor, {}, c, r)[1] for c, r in group]  # type: ignore[index]


@pytest.mark.parametrize("editor", ["dinm", "ft-l"])
def test_rows_of_every_case_share_their_prefixes_below_the_edited_block(
    editor: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every case asks the same templated prompts: the rows of all cases (their edits in blocks 1 and 2 of
    3) start from one prefill of each template below block 1, each case's rows from their own above it;
    the answers are each edit's alone."""
    from transformers import AutoTokenizer

    from pytest_safeedit.backends.hf import LoadedModel
    from tests.unit.test_model import SHARING

    class Placed(DINM):
        """DINM's edit, in the block the test gives each case (1, 2, 1, ...) instead of the toxic layer."""

        def choose_layer(self, model: Any, case: Any, details: Any) -> int:
            super().choose_layer(model, case, details)
            return 1 + int(case.id.endswith("2"))

    path = build_tiny_model(tmp_path / "llama", "llama", AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    chosen = (
        Placed(**{**DINM_SPEC.defaults, "lr": 0.05})
        if editor == "dinm"
        else FTL(**{**FTL_SPEC.defaults, "lr": 0.05, "layer": 1})
    )
    group = [(c, [replace(r, text=text) for r, text in zip(rs * 3, SHARING)]) for c, rs in items(3)]
    real = LoadedModel.prefix_plan
    plans = record_prefix_plans(monkeypatch)
    together = engine_for(path).generate_edited_group(chosen, {}, group)
    count = len(SHARING)
    assert plans and all(p.across for p in plans)
    assert any(len({row // count for row in p.rows}) == 3 for plan in plans for p in plan.prefixes)  # all cases
    monkeypatch.setattr(LoadedModel, "prefix_plan", real)
    alone = engine_for(path)
    assert [o[1] for o in together] == [alone.generate_edited(chosen, {}, c, r)[1] for c, r in group]  # type: ignore[index]


def test_rows_that_end_early_keep_their_own_edited_weight(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generation drops the rows that have ended; the rows left still get their own cases' weights."""
    import json

    from transformers import AutoTokenizer

    import pytest_safeedit.backends.hf as hf
    from pytest_safeedit.backends.hf import load_model
    from pytest_safeedit.config.settings import ModelSettings

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


def tiny_moe(target: Path, tiny_model_dir: Path) -> Path:
    """A tiny Qwen2-MoE: its MLP output projection (the shared expert's ``down_proj``) sees the batch
    flattened to ``[batch * tokens, width]``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2MoeConfig

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = Qwen2MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=64,
        num_experts=4,
        num_experts_per_tok=2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def test_a_module_that_sees_the_batch_flattened_gives_each_row_its_own_weight(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Mixture-of-experts blocks flatten the batch: each row's tokens still get their own case's weight."""
    path = tiny_moe(tmp_path / "moe", tiny_model_dir)
    editor = DINM(**{**DINM_SPEC.defaults, "lr": 0.5})
    group = items(3)
    together_engine = engine_for(path)
    together = together_engine.generate_edited_group(editor, {}, group)
    assert ".shared_expert.down_proj" in str(together[0][0].module)  # type: ignore[index]
    alone_engine = engine_for(path)
    alone = [alone_engine.generate_edited(editor, {}, case, requests)[1] for case, requests in group]
    assert [o[1] for o in together] == alone  # type: ignore[index]
    assert alone[0] != together_engine.generate([r.text for r in group[0][1]], max_new_tokens=6), "edits change answers"


def toy_model(drop_tokens: bool) -> Any:
    """Embeddings, then a linear map on the batch flattened to one row per token (every other token
    with ``drop_tokens``: an expert that sees only the tokens routed to it)."""
    import torch

    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.proj = torch.nn.Linear(4, 4)

        def forward(self, input_ids: torch.Tensor) -> Any:
            flat = self.embed(input_ids).reshape(-1, 4)
            return self.proj(flat[::2] if drop_tokens else flat)

    torch.manual_seed(0)
    return Toy()


def test_flattened_rows_are_mapped_back_to_their_sequences() -> None:
    import torch

    from pytest_safeedit.backends.rows import row_weights

    model = toy_model(drop_tokens=False)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    weights = [torch.randn(4, 4), torch.randn(4, 4)]
    with torch.no_grad(), row_weights(model, [("proj", weights[0]), ("proj", weights[1])]):
        out = model(ids)
    embedded = model.embed(ids).detach()
    for row in range(2):
        expected = torch.nn.functional.linear(embedded[row], weights[row], model.proj.bias.detach())
        assert torch.allclose(out[row * 3 : row * 3 + 3], expected)


def test_rows_that_are_neither_sequences_nor_tokens_are_refused() -> None:
    import torch

    from pytest_safeedit.backends.rows import RowLayoutError, row_weights

    model = toy_model(drop_tokens=True)
    with (
        torch.no_grad(),
        row_weights(model, [("proj", torch.ones(4, 4)), None]),
        pytest.raises(RowLayoutError, match=r"proj gets 3 input rows in a batch of 2 sequences of 3 tokens"),
    ):
        model(torch.tensor([[1, 2, 3], [4, 5, 6]]))


def test_a_refused_module_answers_the_edits_one_at_a_time(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contextlib import contextmanager

    import pytest_safeedit.backends.rows as edit_batch
    from pytest_safeedit.backends.rows import RowLayoutError

    @contextmanager
    def refused(model: Any, rows: Any) -> Any:
        raise RowLayoutError("mlp.c_proj gets 3 input rows")
        yield

    editor = DINM(**{**DINM_SPEC.defaults, "lr": 0.05})
    group = items(2)
    monkeypatch.setattr(edit_batch, "row_weights", refused)
    engine = engine_for(tiny_model_dir)
    with pytest.warns(UserWarning, match="mlp.c_proj gets 3 input rows"):
        together = engine.generate_edited_group(editor, {}, group)
    alone_engine = engine_for(tiny_model_dir)
    assert [o[1] for o in together] == [alone_engine.generate_edited(editor, {}, c, r)[1] for c, r in group]  # type: ignore[index]
    assert engine.edits_run == 2


def out_of_memory_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Answering edits together runs out of memory from its ``calls``-th generation on."""
    from contextlib import contextmanager

    import torch

    import pytest_safeedit.backends.rows as edit_batch

    real = edit_batch.row_weights
    made: list[None] = []

    @contextmanager
    def failing(model: Any, rows: Any) -> Any:
        made.append(None)
        with real(model, rows) as weights:
            if len(made) >= calls:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            yield weights

    monkeypatch.setattr(edit_batch, "row_weights", failing)


def test_out_of_memory_while_answering_fails_only_the_cases_of_its_rows(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = DINM(**{**DINM_SPEC.defaults, "lr": 0.05})
    group = items(3)
    size = len(group[0][1]) + len(group[1][1])
    group = [(c, [replace(r, settings=replace(r.settings, batch_size=size)) for r in rs]) for c, rs in group]
    out_of_memory_after(monkeypatch, 2)  # the first batch (cases 1 and 2) is answered, the second is not
    outcomes = engine_for(tiny_model_dir).generate_edited_group(editor, {}, group)
    assert [isinstance(o, EditFailed) for o in outcomes] == [False, False, True]
    assert str(outcomes[2]) == (
        f"the dinm edit of case {group[2][0].id!r} was made, but answering with the edited model failed: "
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    alone = engine_for(tiny_model_dir)
    assert [o[1] for o in outcomes[:2]] == [alone.generate_edited(editor, {}, c, r)[1] for c, r in group[:2]]  # type: ignore[index]


def test_a_group_that_failed_to_answer_is_not_edited_again(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_safeedit.editors.base import EditorSpec
    from pytest_safeedit.editors.registry import SuiteEditors
    from pytest_safeedit.run.evaluator import Evaluator

    edits: list[str] = []

    class Counted(DINM):
        def choose_layer(self, model: Any, case: Any, details: Any) -> int:
            edits.append(case.id)
            return super().choose_layer(model, case, details)

    editor = Counted(**{**DINM_SPEC.defaults, "lr": 0.05})
    suite = load_suite(SAMPLE_SUITE)
    attacks = [c for c in suite.cases if not c.benign][:2]
    engine = Engine(RunSettings(model=str(tiny_model_dir), no_cache=True, max_new_tokens=4))
    evaluator = Evaluator(engine, SuiteEditors(EditorSpec("dinm", lambda: editor)))
    evaluator.upcoming_cases = lambda: [(suite, c) for c in attacks]
    out_of_memory_after(monkeypatch, 1)
    for case in attacks:
        with pytest.raises(EditFailed, match="answering with the edited model failed: OutOfMemoryError"):
            evaluator.evaluate(suite, case, case.probes[0])
    assert edits == [c.id for c in attacks]  # each edited once, answered together, failed once
