"""Prefixes kept from one generation call to the next (``backends/stored.py``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_safeedit.backends.hf import LoadedModel, load_model
from pytest_safeedit.backends.prefix import Prefix, PrefixPlan, with_stored
from pytest_safeedit.backends.stored import PrefixStore, mark_restored, weights_state
from pytest_safeedit.backends.tiny import ARCHITECTURES, build_tiny_model
from pytest_safeedit.config.settings import ModelSettings
from pytest_safeedit.editors.base import weights_restored
from tests.helpers import ending_token
from tests.unit.test_model import SHARING


def states(length: int, layers: int = 2, fill: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One row's keys and values of ``length`` tokens (position ``i`` holds ``fill + i``)."""
    row = (torch.arange(length, dtype=torch.float32) + fill).view(1, 1, length, 1).expand(1, 2, length, 3)
    return [(row.clone(), row.clone() + 0.5) for _ in range(layers)]


def opened() -> PrefixStore:
    """A store open for a model's state."""
    store = PrefixStore()
    assert store.open(torch.nn.Linear(1, 1))
    return store


def test_the_longest_kept_prefix_is_found_and_sliced() -> None:
    store = opened()
    store.put([1, 2, 3, 4, 5, 6], states(6), budget=1 << 30)
    store.put([1, 2, 9, 9], states(4, fill=100), budget=1 << 30)
    assert store.longest([1, 2, 3, 4, 7]) == (4, (1, 2, 3, 4, 5, 6))
    assert store.longest([1, 2, 9, 9, 9, 9]) == (4, (1, 2, 9, 9))
    assert store.longest([5, 1, 2]) == (0, None)
    sliced = store.states((1, 2, 3, 4, 5, 6), 4)
    assert sliced[0][0].shape == (1, 2, 4, 3) and sliced[0][0][0, 0, :, 0].tolist() == [0, 1, 2, 3]
    assert store.tokens_reused == 4


def test_a_prefix_held_by_a_kept_one_is_not_kept_twice_and_a_longer_one_replaces_it() -> None:
    store = opened()
    store.put([1, 2, 3], states(3), budget=1 << 30)
    store.put([1, 2, 3, 4, 5], states(5), budget=1 << 30)  # holds [1, 2, 3]: that one goes
    store.put([1, 2], states(2), budget=1 << 30)  # held by [1, 2, 3, 4, 5]: not kept
    assert len(store) == 1 and store.longest([1, 2, 3, 4, 5, 6]) == (5, (1, 2, 3, 4, 5))
    assert store.bytes == sum(t.numel() * 4 for pair in states(5) for t in pair)


def test_over_budget_the_prefixes_of_states_that_do_not_last_go_first_then_the_least_recently_used() -> None:
    size = sum(t.numel() * 4 for pair in states(4) for t in pair)
    net = torch.nn.Linear(1, 1)
    store = PrefixStore()

    def edited() -> Any:
        return weights_restored([net.weight])

    def edit() -> None:
        with torch.no_grad():
            net.weight.add_(1.0)

    def kept(token: int) -> bool:
        return store.longest([token] * 4)[0] == 4

    assert store.open(net)  # the first state met (the model as loaded) lasts
    store.put([1] * 4, states(4), budget=3 * size)
    store.put([2] * 4, states(4), budget=3 * size)
    store.states((2,) * 4, 4)  # used: [1] is now the least recent
    store.put([3] * 4, states(4), budget=3 * size)
    with edited():
        edit()
        assert store.open(net)
        store.put([6] * 4, states(4), budget=3 * size)  # no state to drop first: the least recent, [1]
        assert store.open(net)
        store.states((6,) * 4, 4)  # read by the edit's own second call: it does not last for that
    assert store.open(net) and not kept(1) and kept(2) and kept(3) and not kept(6)
    with edited():
        edit()
        assert store.open(net)
        store.put([7] * 4, states(4), budget=3 * size)  # the first edit's [6] goes, not [2] or [3]
        assert not kept(7 - 1) and kept(7)
    assert store.open(net) and kept(2) and kept(3) and store.bytes == 3 * size  # [7] too, unreadable here
    with edited():
        edit()
        assert store.open(net)
        # Larger than the budget on its own: not kept, and nothing else is dropped for it.
        store.put([5] * 16, states(16), budget=3 * size)
        assert not kept(5)
    assert len(store) == 3 and store.bytes == 3 * size


def test_with_stored_starts_rows_from_kept_prefixes_at_least_16_tokens_longer() -> None:
    rows = [list(range(40)) + [90], list(range(40)) + [91], list(range(20)) + [7] * 10, [5] * 30]
    plan = PrefixPlan((Prefix(0, 18, None, (0, 1, 2)),), (0, 0, 0, None))
    planned = with_stored(plan, rows, [35, 35, 25, 0])
    assert [planned.shared(row) for row in range(4)] == [35, 35, 18, 0]  # 25 is only 7 past the plan's 18
    assert planned.prefixes[1] == Prefix(0, 35, None, (0, 1))
    assert planned.prefixes[0].rows == (2,)
    whole = with_stored(PrefixPlan((), (None,) * 4), rows, [41, 0, 0, 30])
    assert whole.shared(0) == 40 and whole.shared(3) == 29  # a row keeps its last token to compute


def test_the_state_follows_versions_storage_restores_and_hooks() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    before = weights_state(net)
    assert before is not None and weights_state(net) == before
    with weights_restored([net[0].weight]):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        assert weights_state(net) != before
    assert weights_state(net) == before  # copied back, and said so
    with torch.no_grad():
        net[1].bias.copy_(net[1].bias)  # a write, even of the same values, is a change
    assert weights_state(net) != before
    after = weights_state(net)
    handle = net[0].register_forward_hook(lambda *_: None)
    assert weights_state(net) is None
    handle.remove()
    assert weights_state(net) == after
    net[1].forward = lambda x: x  # type: ignore[method-assign]
    assert weights_state(net) is None
    del net[1].forward
    net.to(torch.float64)
    assert weights_state(net) not in (None, after)


def test_mark_restored_chains_back_to_the_first_equal_version() -> None:
    weight = torch.nn.Parameter(torch.zeros(2))
    first = weight._version
    for _ in range(3):
        saved = weight._version
        with torch.no_grad():
            weight.add_(1.0)
            weight.sub_(1.0)
        mark_restored(weight, saved)
    net = torch.nn.Module()
    net.weight = weight
    state = weights_state(net)
    assert state is not None and state.tensors[0][5] == first


def test_a_call_reads_only_the_prefixes_of_the_models_present_state() -> None:
    net = torch.nn.Linear(2, 2)
    store = PrefixStore()
    assert store.open(net)
    store.put([1] * 20, states(20), budget=1 << 30)
    with weights_restored([net.weight]):
        with torch.no_grad():
            net.weight.mul_(2.0)
        assert store.open(net)  # an edit answered alone: its own prefixes, not the unedited model's
        assert store.longest([1] * 20) == (0, None)
        store.put([1] * 20, states(20, fill=7), budget=1 << 30)
        assert store.states((1,) * 20, 20)[0][0][0, 0, 0, 0] == 7
    assert store.open(net) and len(store) == 2  # restored: the unedited model's serve again
    assert store.states((1,) * 20, 20)[0][0][0, 0, 0, 0] == 0
    net.register_forward_pre_hook(lambda *_: None)
    assert not store.open(net)
    with pytest.raises(RuntimeError, match="not open"):
        store.put([2] * 20, states(20), budget=1 << 30)


def load(path: Path) -> LoadedModel:
    return load_model(ModelSettings(name_or_path=str(path)))


@pytest.mark.parametrize("kind", sorted(ARCHITECTURES))
def test_prefixes_kept_from_an_earlier_call_give_the_answers_of_plain_generation(
    kind: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Each call of the questions under one template starts from the template's keys and values kept by the
    call before; every answer is the prompt's plain generation."""
    from transformers import AutoTokenizer

    model = load(build_tiny_model(tmp_path, kind, AutoTokenizer.from_pretrained(str(tiny_model_dir))))
    prompts = [model.format_prompt(p, max_new_tokens=10) for p in SHARING]
    model.model.generation_config.eos_token_id = ending_token(model, prompts, 10)
    alone = [model.generate([p], max_new_tokens=10, batch_size=1, prefix_cache_mb=0, prune=False)[0] for p in prompts]
    store = model.prefix_store
    answers = []
    for start in range(0, len(prompts), 2):  # the two rows of a template in one call, its third in the next
        answers += model.generate(prompts[start : start + 2], max_new_tokens=10)
    assert answers == alone
    if not model._shares_prefixes(model.token_rows(prompts, 10), 10, 1024):
        assert store.tokens_reused == 0  # a model whose cache cannot be branched computes every prompt whole
        return
    assert store.tokens_reused > 0 and len(store) > 0
    again = store.tokens_reused
    assert model.generate([prompts[2]], max_new_tokens=10) == [alone[2]]  # a single prompt, from the store
    assert store.tokens_reused > again


def test_an_edited_model_reads_the_unedited_prefixes_only_below_its_edit_and_they_serve_again_after(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    model = load(build_tiny_model(tmp_path, "llama", AutoTokenizer.from_pretrained(str(tiny_model_dir))))
    prompts = [model.format_prompt(p, max_new_tokens=8) for p in SHARING]
    model.model.generation_config.eos_token_id = ending_token(model, prompts, 8)
    weight: Any = model.model.model.layers[1].mlp.down_proj.weight
    lowest: Any = model.model.model.layers[0].mlp.down_proj.weight
    unedited = [model.generate([p], max_new_tokens=8, batch_size=1, prefix_cache_mb=0, prune=False)[0] for p in prompts]
    answers = {}
    for edited_weight in (weight, lowest):
        with weights_restored([edited_weight]):
            with torch.no_grad():
                edited_weight.mul_(-3.0)
            answers[id(edited_weight)] = [
                model.generate([p], max_new_tokens=8, batch_size=1, prefix_cache_mb=0, prune=False)[0] for p in prompts
            ]
    edited = answers[id(weight)]
    assert edited != unedited and answers[id(lowest)] != unedited
    store = model.prefix_store
    assert model.generate(prompts[:2], max_new_tokens=8) == unedited[:2]
    reused = store.tokens_reused
    with weights_restored([lowest]):
        with torch.no_grad():
            lowest.mul_(-3.0)
        assert model.generate(prompts[:3], max_new_tokens=8) == answers[id(lowest)][:3]
        assert store.tokens_reused == reused  # edited in the first block: nothing below it to read
    with weights_restored([weight]):
        with torch.no_grad():
            weight.mul_(-3.0)
        assert model.generate(prompts[:3], max_new_tokens=8) == edited[:3]
        assert store.tokens_reused > reused  # the unedited model's below the edited block
        assert model._split_exact == {"below": True}
        reused = store.tokens_reused
        assert model.generate(prompts[3:6], max_new_tokens=8) == edited[3:6]
    assert model.generate(prompts[2:], max_new_tokens=8) == unedited[2:]
    assert store.tokens_reused > reused  # restored: the unedited model's prefixes serve again
    with torch.no_grad():
        weight.mul_(-3.0)  # changed for good (no restore)
    assert model.generate(prompts, max_new_tokens=8) == edited
    assert model.generate(prompts, max_new_tokens=8) == edited


def test_a_budget_of_0_empties_the_store(tiny_llama_dir: Path) -> None:
    model = load(tiny_llama_dir)
    prompts = [model.format_prompt(p, max_new_tokens=4) for p in SHARING]
    model.generate(prompts, max_new_tokens=4)
    assert len(model.prefix_store) > 0
    model.generate(prompts[:1], max_new_tokens=4, prefix_cache_mb=0)
    assert len(model.prefix_store) == 0


def test_a_routed_checkpoints_swap_gives_the_original_state_back() -> None:
    from pytest_safeedit.editors.routed import weights_swapped

    net = torch.nn.Linear(2, 2)
    before = weights_state(net)
    swapped_in: dict[tuple[str, int], int] = {}
    with weights_swapped(net, {"weight": torch.ones(2, 2)}, swapped_in):
        inside = weights_state(net)
        assert inside != before
    assert weights_state(net) == before
    with weights_swapped(net, {"weight": torch.ones(2, 2)}, swapped_in):
        assert weights_state(net) == inside  # the same values again: what was kept for them serves again
    assert weights_state(net) == before


def test_tensors_without_plain_storage_turn_the_store_off() -> None:
    sparse = torch.nn.Linear(2, 2)
    sparse.register_buffer("table", torch.eye(3).to_sparse())
    quantized = torch.nn.Linear(2, 2)
    with warnings.catch_warnings():  # quantized tensors are deprecated in torch, still met in checkpoints
        warnings.simplefilter("ignore")
        quantized.register_buffer("q", torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8))
    assert weights_state(sparse) is None and weights_state(quantized) is None
    assert not PrefixStore().open(sparse)


def test_the_sample_reaches_the_last_value_of_any_layout() -> None:
    """Evenly spaced from the first value to the last, read in place from a transposed tensor too."""
    for weight in (torch.zeros(100), torch.zeros(64, 48).t()):
        net = torch.nn.Module()
        net.weight = torch.nn.Parameter(weight)
        before = weights_state(net)
        last = net.weight.data.view(-1) if weight.is_contiguous() else net.weight.data[-1]
        last[-1] = 1.0  # through .data: no new version, only the values tell
        assert weights_state(net) != before


def test_writes_that_give_no_new_version_still_change_the_state() -> None:
    """A fused optimizer step and a write through ``.data`` keep the version; the values sampled change."""
    net = torch.nn.Linear(64, 64)
    before = weights_state(net)
    optimizer = torch.optim.Adam([net.weight], lr=1e-2, fused=True)
    net(torch.ones(2, 64)).sum().backward()
    version = net.weight._version
    optimizer.step()
    after = weights_state(net)
    assert net.weight._version == version and after != before
    net.bias.data.add_(1.0)
    assert weights_state(net) != after


def test_a_new_tensor_in_another_ones_memory_is_another_state() -> None:
    """An editor that swaps Parameters in and out: a new tensor may take the memory (and version 0) of one
    freed before, yet it is another tensor (here it shares the memory, to show it on every allocator)."""
    net = torch.nn.Linear(4, 4)
    first = torch.nn.Parameter(torch.ones(4, 4))
    net.weight = first
    before = weights_state(net)
    second = torch.nn.Parameter(first.detach())
    assert second.data_ptr() == first.data_ptr() and second._version == first._version
    net.weight = second
    assert weights_state(net) != before


def test_a_model_built_under_inference_mode_generates_and_keeps_prefixes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Buffers made under ``torch.inference_mode`` (rotary frequencies) keep no version: the values tell."""
    from transformers import AutoTokenizer

    with torch.inference_mode():
        model = load(build_tiny_model(tmp_path, "llama", AutoTokenizer.from_pretrained(str(tiny_model_dir))))
        model.model  # noqa: B018 - loads the weights here
    assert any(t.is_inference() for t in model.model.buffers())
    prompts = [model.format_prompt(p, max_new_tokens=4) for p in SHARING]
    alone = [model.generate([p], max_new_tokens=4, batch_size=1, prefix_cache_mb=0, prune=False)[0] for p in prompts]
    assert model.generate(prompts[:2], max_new_tokens=4) == alone[:2]
    assert model.generate(prompts[2:], max_new_tokens=4) == alone[2:]
    assert model.prefix_store.tokens_reused > 0


@pytest.mark.parametrize("editor", ["dinm", "ft-l"])
def test_the_unedited_prefixes_serve_again_after_a_real_edit(editor: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """DINM asks for hidden states (transformers then hooks every block, inertly) and trains with Adam; FT-L
    trains only: while either edit is on, the edited model reads the unedited model's kept prefixes below
    its edited block and its answers are its plain generation; after it is restored they serve whole again."""
    from transformers import AutoTokenizer

    from pytest_safeedit.editors.dinm import DINM, DINM_SPEC, FTL, FTL_SPEC
    from tests.unit.test_dinm import CASE

    model = load(build_tiny_model(tmp_path, "llama", AutoTokenizer.from_pretrained(str(tiny_model_dir))))
    prompts = [model.format_prompt(p, max_new_tokens=6) for p in SHARING]
    chosen: Any = (
        DINM(**{**DINM_SPEC.defaults, "lr": 1e-1}) if editor == "dinm" else FTL(**{**FTL_SPEC.defaults, "lr": 1e-1})
    )
    with chosen.edit(model, CASE):
        edited = [
            model.generate([p], max_new_tokens=6, batch_size=1, prefix_cache_mb=0, prune=False)[0] for p in prompts
        ]
    unedited = [model.generate([p], max_new_tokens=6, batch_size=1, prefix_cache_mb=0, prune=False)[0] for p in prompts]
    assert edited != unedited
    assert model.generate(prompts[:2], max_new_tokens=6) == unedited[:2]
    reused = model.prefix_store.tokens_reused
    with chosen.edit(model, CASE) as details:
        assert model.generate(prompts, max_new_tokens=6) == edited
        below = model.prefix_store.tokens_reused > reused  # read below the edited block, if there is one
        assert below == (details.layer > 0)
    reused = model.prefix_store.tokens_reused
    assert model.generate(prompts[2:], max_new_tokens=6) == unedited[2:]
    assert model.prefix_store.tokens_reused > reused


def test_a_repairs_restore_gives_the_loaded_state_back() -> None:
    from types import SimpleNamespace

    from pytest_safeedit.run.repair import Accumulated, restore

    net = torch.nn.Linear(2, 2)
    before = weights_state(net)
    done = Accumulated(SimpleNamespace(model=net), [], {"weight": net.weight.detach().clone()})
    done.versions["weight"] = net.weight._version
    with torch.no_grad():
        net.weight.add_(1.0)
    assert weights_state(net) != before
    restore(done)
    assert weights_state(net) == before
