"""Prefixes shared below the lowest edited block by the rows of several edited models: the keys and values
equal one forward pass, and every row's answer is its edited model's plain generation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.backends.architecture import mlp_output_projection
from pytest_safeedit.backends.below import lowest_edited_block
from pytest_safeedit.backends.hf import LoadedModel, load_model
from pytest_safeedit.backends.rows import row_weights
from pytest_safeedit.backends.tiny import ARCHITECTURES, build_tiny_model
from pytest_safeedit.config.settings import ModelSettings
from tests.helpers import ending_token
from tests.unit.test_model import SHARING


def edited_weights(model: LoadedModel, layers: list[int]) -> list[tuple[str, Any]]:
    """An edited MLP output projection for each of ``layers``: the weight plus noise large enough to change answers of tiny models."""
    import torch

    torch.manual_seed(1)
    out = []
    for layer in layers:
        projection = mlp_output_projection(model.model, layer)
        weight = projection.weight.detach()
        out.append((projection.name, weight + 30 * torch.randn_like(weight)))
    return out


@contextmanager
def weight_in_place(model: LoadedModel, name: str, weight: Any) -> Iterator[None]:
    """``weight`` in place of module ``name``'s own, restored on exit."""
    import torch

    param: Any = model.model.get_submodule(name).weight
    saved = param.detach().clone()
    with torch.no_grad():
        param.copy_(weight)
    try:
        yield
    finally:
        with torch.no_grad():
            param.copy_(saved)


def block_tokens(model: LoadedModel) -> list[int]:
    """The tokens block 0 computes (through its MLP) in every forward pass of ``model`` from now on."""
    counted: list[int] = []

    def count(_: Any, args: tuple[Any, ...]) -> None:
        counted.append(int(args[0].numel() // args[0].shape[-1]))

    mlp_output_projection(model.model, 0).module.register_forward_pre_hook(count)
    return counted


def tiny(kind: str, tiny_model_dir: Path, tmp_path: Path) -> LoadedModel:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    return load_model(ModelSettings(str(build_tiny_model(tmp_path / kind, kind, tokenizer))))


def answers_alone(model: LoadedModel, prompts: list[str], weights: list[tuple[str, Any] | None]) -> list[str]:
    """Each prompt answered by its own edited model (the weight in place), nothing shared: plain batched
    generation of each model's prompts (equal to one at a time: ``test_model.py``)."""
    out = [""] * len(prompts)
    for weight in {id(own): own for own in weights}.values():
        rows = [row for row, own in enumerate(weights) if own is weight]
        edit: AbstractContextManager[None] = nullcontext() if weight is None else weight_in_place(model, *weight)
        with edit:
            answers = model.generate([prompts[row] for row in rows], max_new_tokens=12, prefix_cache_mb=0, prune=False)
        for row, answer in zip(rows, answers):
            out[row] = answer
    return out


def three_edits(
    kind: str, tiny_model_dir: Path, tmp_path: Path
) -> tuple[LoadedModel, list[str], list[str], list[tuple[str, Any] | None], list[str]]:
    """A tiny model of ``kind``, its templated prompts, those prompts four times, the rows' weights (edits
    of blocks 2, 1 and 2 of 3, then the unedited model) and each row's answer by its own model alone."""
    model = tiny(kind, tiny_model_dir, tmp_path)
    texts = [model.format_prompt(p, max_new_tokens=12) for p in SHARING]
    model.model.generation_config.eos_token_id = ending_token(model, texts, 12)
    edits = edited_weights(model, [2, 1, 2])
    prompts = texts * 4
    rows: list[tuple[str, Any] | None] = [edit for edit in edits for _ in texts] + [None] * len(texts)
    return model, texts, prompts, rows, answers_alone(model, prompts, rows)


@pytest.mark.parametrize("kind", sorted(ARCHITECTURES))
def test_rows_of_several_edits_share_the_blocks_below_and_answer_as_each_edit_alone(
    kind: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Three edited models (blocks 2, 1, 2 of 3) and the unedited one answer the same templated prompts in
    one generation: each prefix runs through block 0 once for all of them, its keys and values equal one
    forward pass with the row's weights, and every answer is that edited model's alone."""
    import torch

    model, texts, prompts, rows, alone = three_edits(kind, tiny_model_dir, tmp_path)
    assert alone[: -len(texts)] != alone[-len(texts) :] * 3, "the edits should change some answer"
    ids = model.token_rows(prompts, 12)
    counted = block_tokens(model)
    with row_weights(model.model, rows) as weights:
        keys = weights.weight_keys(len(ids))
        assert model.shared_below(weights, keys) == 1
        plan = model.prefix_plan(ids, 12, 1024, weights, 1)
        assert plan.across and any(len({keys[r] for r in p.rows}) > 1 for p in plan.prefixes)
        split = model._prefill_prefixes(ids, plan, keys, weights, 1)
        assert split is not None and model._split_exact == {"below": True}
        for index, (prefix, groups) in enumerate(zip(plan.prefixes, plan.groups(keys))):
            for group in groups:
                row, tokens = keys.index(group), ids[prefix.row][: prefix.length]  # the group's weights
                start = 0 if prefix.parent is None else plan.prefixes[prefix.parent].length
                parent = [] if prefix.parent is None else split[prefix.parent][group]
                one_pass = model._extend(parent, tokens[start:], start, row, weights)
                fresh = model._extend([], tokens, 0, row, weights)
                assert one_pass is not None and fresh is not None
                for (k, v), (k1, v1), (k2, v2) in zip(split[index][group], one_pass, fresh, strict=True):
                    assert torch.equal(k, k1) and torch.equal(v, v1)
                    assert torch.allclose(k, k2, atol=1e-5) and torch.allclose(v, v2, atol=1e-5)
        counted[:] = []
        assert model.generate(prompts, max_new_tokens=12, row_weights=weights) == alone
        across = sum(counted)
        assert model.generate(prompts, max_new_tokens=12, row_weights=weights, batch_size=5) == alone
        assert model.generate(prompts, max_new_tokens=12, row_weights=weights, prune=False) == alone
        model._split_exact["below"] = False  # what a failed check leaves: each weight's prefixes on their own
        counted[:] = []
        assert model.generate(prompts, max_new_tokens=12, row_weights=weights) == alone
        assert across < sum(counted)


def test_a_split_that_is_not_exact_falls_back_for_good(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An architecture whose blocks read more than the output of the block below gives other keys and
    values when the blocks below hand on their output: the check on the first prefix sees it, and the
    prefixes are computed per weight from then on, with the same answers."""
    from pytest_safeedit.backends.below import blocks_replayed

    model = load_model(ModelSettings(str(tiny_llama_dir)))
    texts = [model.format_prompt(p, max_new_tokens=12) for p in SHARING]
    edits = edited_weights(model, [1, 1])
    prompts = texts * 2
    rows: list[tuple[str, Any] | None] = [edit for edit in edits for _ in texts]
    alone = answers_alone(model, prompts, rows)

    def handed_on_wrong(blocks: Any, below: int, output: Any) -> Any:
        return blocks_replayed(blocks, below, output * 1.001)

    monkeypatch.setattr("pytest_safeedit.backends.hf.blocks_replayed", handed_on_wrong)
    view = model.with_input_limit(None)
    with row_weights(model.model, rows) as weights:
        assert view.generate(prompts, max_new_tokens=12, row_weights=weights) == alone
        assert model._split_exact == {"below": False}  # seen by the model the view was made from
        assert model.shared_below(weights, weights.weight_keys(len(prompts))) == 0


def test_what_cannot_share_below_the_edit(tiny_llama_dir: Path) -> None:
    model = load_model(ModelSettings(str(tiny_llama_dir)))
    (edit,) = edited_weights(model, [1])
    with row_weights(model.model, [edit, edit]) as weights:
        assert model.shared_below(weights, weights.weight_keys(2)) == 0  # one weight: nothing across
        assert model.shared_below(weights, weights.weight_keys(3)) == 1  # and an unedited row
    assert model.shared_below(None, [None, None]) == 0
    (low,) = edited_weights(model, [0])
    with row_weights(model.model, [edit, low]) as weights:
        assert model.shared_below(weights, weights.weight_keys(2)) == 0  # nothing below block 0
    assert lowest_edited_block("model.layers", 2, ["model.layers.1.mlp.down_proj", "model.layers.0.mlp"]) == 0
    assert lowest_edited_block("model.layers", 2, ["model.layers.1.mlp.down_proj", "lm_head"]) is None
    assert lowest_edited_block("model.layers", 12, ["model.layers.11.mlp.down_proj"]) == 11


def test_a_forward_pass_stops_after_the_last_block_below_and_blocks_get_their_own_forward_back(
    tiny_llama_dir: Path,
) -> None:
    import torch

    from pytest_safeedit.backends.architecture import transformer_blocks
    from pytest_safeedit.backends.below import blocks_replayed, run_below

    model = load_model(ModelSettings(str(tiny_llama_dir)))
    blocks = transformer_blocks(model.model)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        states = model.model(input_ids=ids, output_hidden_states=True).hidden_states
        stopped = run_below(blocks, 1, lambda: model.model(input_ids=ids))
        assert stopped is not None and torch.equal(stopped, states[1])  # block 0's output, the input of block 1
        assert run_below(blocks, 1, lambda: None) is None  # the block never ran
        with pytest.raises(ValueError, match="no block below block 0"):
            run_below(blocks, 0, lambda: None)
        with blocks_replayed(blocks, 1, stopped):
            assert "forward" in blocks[0].__dict__
            replayed = model.model(input_ids=ids).logits
        assert "forward" not in blocks[0].__dict__
        assert torch.equal(replayed, model.model(input_ids=ids).logits)
