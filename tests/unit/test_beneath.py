"""An edited model reads the unedited model's kept prefixes below its edited block (``backends/stored.py``,
:meth:`~pytest_safeedit.backends.hf.LoadedModel._from_beneath`): alone (the edit in place) and as the rows
of several edits answered together, the keys and values equal a fresh forward pass and every answer is the
edited model's plain generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_safeedit.backends.architecture import mlp_output_projection
from pytest_safeedit.backends.hf import LoadedModel
from pytest_safeedit.backends.rows import row_weights
from pytest_safeedit.backends.stored import PrefixStore, weights_state
from pytest_safeedit.backends.tiny import ARCHITECTURES
from tests.helpers import ending_token
from tests.unit.test_below import edited_weights, three_edits, tiny, weight_in_place
from tests.unit.test_model import SHARING
from tests.unit.test_stored import states


def block_tokens(model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The tokens block 0's MLP output projection computes in every forward pass of ``model`` from now on,
    counted by its class's forward (a hook on the module would turn the store off)."""
    module = mlp_output_projection(model.model, 0).module
    own = type(module).forward
    counted: list[int] = []

    def forward(self: Any, inputs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self is module:
            counted.append(int(inputs.numel() // inputs.shape[-1]))
        return own(self, inputs, *args, **kwargs)

    monkeypatch.setattr(type(module), "forward", forward)
    return counted


def shares(model: LoadedModel, prompts: list[str]) -> bool:
    return model._shares_prefixes(model.token_rows(prompts, 12), 12, 1024)


@pytest.mark.parametrize("kind", sorted(ARCHITECTURES))
def test_an_edit_answered_alone_reads_below_its_block_and_answers_as_plain_generation(
    kind: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the unedited model's call, a model edited in block 2 (of 3) in place starts its prefixes from
    the unedited model's keys and values below block 2 and the hidden state entering it: each equals a
    fresh forward pass of the edited model, and every answer is its plain generation."""
    model = tiny(kind, tiny_model_dir, tmp_path)
    prompts = [model.format_prompt(p, max_new_tokens=12) for p in SHARING]
    model.model.generation_config.eos_token_id = ending_token(model, prompts, 12)
    ((name, weight),) = edited_weights(model, [2])
    with weight_in_place(model, name, weight):
        edited = [model.generate([p], max_new_tokens=12, prefix_cache_mb=0, prune=False)[0] for p in prompts]
    unedited = model.generate(prompts, max_new_tokens=12)
    assert edited != unedited, "the edit should change some answer"
    store = model.prefix_store
    if not shares(model, prompts):
        assert len(store) == 0
        return
    assert store.keeps_hidden and len(store) > 0
    reused = store.tokens_reused
    counted = block_tokens(model, monkeypatch)
    with weight_in_place(model, name, weight):
        assert model.generate(prompts, max_new_tokens=12) == edited
        assert store.tokens_reused > reused and model._split_exact == {"below": True}
        ids = model.token_rows(prompts, 12)
        finder = model._beneath_finder(ids, 12, 1024, None)
        assert finder is not None
        key = next(key for (_, key), kept in store._entries.items() if kept.hidden is not None)
        found = finder(key, None)
        assert found is not None and found.level == 2 and found.length == len(key)
        read = model._from_beneath([], key, 0, found, 0)
        fresh = model._extend([], key, 0, 0)
        assert read is not None and fresh is not None
        for (k, v), (k1, v1) in zip(read, fresh, strict=True):
            assert torch.allclose(k, k1, atol=1e-5) and torch.allclose(v, v1, atol=1e-5)
    assert sum(counted) < sum(len(row) for row in model.token_rows(prompts, 12))  # block 0 skipped kept tokens
    assert model.generate(prompts, max_new_tokens=12) == unedited


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma"])
def test_edits_answered_together_each_read_below_their_own_block(
    kind: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three edited models (blocks 2, 1, 2 of 3) and the unedited one answer the same prompts in one call
    after the unedited model's: every prefix kept is read below each row's own edited block (block 0
    computes fewer tokens than without reading), and every answer is that model's alone."""
    model, texts, prompts, rows, alone = three_edits(kind, tiny_model_dir, tmp_path)
    assert model.generate(texts, max_new_tokens=12) == alone[-len(texts) :]
    store = model.prefix_store
    counted = block_tokens(model, monkeypatch)
    with row_weights(model.model, rows) as weights:
        reused = store.tokens_reused
        assert model.generate(prompts, max_new_tokens=12, row_weights=weights) == alone
        assert store.tokens_reused > reused
        with_store = sum(counted)
        model._split_exact["below"] = False  # what a failed check leaves: nothing read below
        counted[:] = []
        assert model.generate(prompts, max_new_tokens=12, row_weights=weights) == alone
        assert with_store < sum(counted)
    del model._split_exact["below"]
    with row_weights(model.model, rows[: len(texts)]) as weights:  # one edit's rows alone: one group
        assert model.generate(prompts[: len(texts)], max_new_tokens=12, row_weights=weights) == alone[: len(texts)]


def test_levels_come_from_the_tensors_that_differ_and_only_the_first_state_keeps_hidden_states() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    store = PrefixStore()
    assert store.open(net) and store.keeps_hidden
    hidden = [torch.arange(6.0).view(1, 6, 1)]
    store.put([1] * 6, states(6), budget=1 << 30, hidden=hidden)
    first = weights_state(net)
    assert first is not None
    with torch.no_grad():
        net[1].weight.mul_(2.0)
    now = weights_state(net)
    assert now is not None and now.differing(first) == ["1.weight"]
    assert store.open(net) and not store.keeps_hidden  # another state: keeps no hidden states
    store.put([2] * 6, states(6), budget=1 << 30, hidden=hidden)
    assert all((kept.hidden is None) == (key[1][0] == 2) for key, kept in store._entries.items())

    def level(names: list[str]) -> int:
        return 2 if not names else int(names[0].split(".")[0])

    levels = store.levels(now, level)
    assert sorted(levels.values()) == [1, 2]
    found = store.beneath([1, 1, 1, 1, 5], levels)
    assert found is not None and (found.length, found.level) == (4, 1)
    assert found.entering is not None and found.entering.flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert len(found.states) == 1 and found.states[0][0].shape[2] == 4
    assert store.beneath([2, 2, 2, 2], levels) is None  # the edited state's own: no hidden states
    assert store.beneath([1, 1], {number: 0 for number in levels}) is None  # equal below no block
    whole = store.beneath([1] * 6, {number: 2 for number in levels})
    assert whole is not None and whole.entering is None and len(whole.states) == 2  # equal everywhere


def test_over_budget_hidden_states_go_before_keys_and_values_and_what_is_kept_is_what_is_counted() -> None:
    store = PrefixStore()
    assert store.open(torch.nn.Linear(1, 1)) and store.keeps_hidden
    size = sum(t.numel() * t.element_size() for pair in states(4) for t in pair)
    hidden = [torch.zeros(1, 4, 24)]  # as many bytes as the keys and values
    store.put([1] * 4, states(4), budget=3 * size, hidden=hidden)
    assert store.bytes == 2 * size
    store.put([2] * 4, states(4), budget=3 * size, hidden=hidden)  # over: the older one's hidden states go
    assert len(store) == 2 and store.bytes == 3 * size
    assert [kept.hidden is None for kept in store._entries.values()] == [True, False]
    store.put([3] * 4, states(16), budget=3 * size)  # alone over the budget: not kept, nothing dropped
    assert len(store) == 2 and store.bytes == 3 * size
    whole = states(8)
    store.put([4] * 4, [(k[:, :, :4], v[:, :, :4]) for k, v in whole], budget=1 << 30)  # views: copied
    kept = store._entries[(0, (4,) * 4)].states
    assert all(k._base is None and v._base is None for k, v in kept)
    assert (
        store.bytes
        == sum(t.numel() * t.element_size() for e in store._entries.values() for p in e.states for t in p) + size
    )
