"""The routed editor: its probe, routing in the evaluator, exact restore, and the figures reports show."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.backends.hf import LoadedModel, load_model
from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.cases.model import Suite
from pytest_safeedit.config.settings import ModelSettings, RunSettings
from pytest_safeedit.editors.base import EditorSpec, InputRouter, validate_hparams
from pytest_safeedit.editors.registry import SuiteEditors
from pytest_safeedit.editors.routed import ROUTED_SPEC, Routed, RoutingError, train_router
from pytest_safeedit.results.side_effects import consistent
from pytest_safeedit.results.summary import side_effects, side_effects_table
from pytest_safeedit.run.engine import EditFailed, Engine
from pytest_safeedit.run.evaluator import Evaluator
from tests.helpers import BENIGN, MINI_SUITE, FakeEditor, FakeGenerator


class FakeRouter(FakeEditor):
    """A weight-free editor that routes: it flags the inputs that hold ``marker``."""

    name = "fake-router"

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def fit(self, model: Any, attack: Sequence[str], harmless: Sequence[str]) -> dict[str, Any]:
        self.seen = (list(attack), list(harmless))
        return {"block": 0, "probe_accuracy": 100.0, "harmless_routed": 0.0}

    def flags(self, model: Any, texts: Sequence[str]) -> list[bool]:
        return [self.marker in t for t in texts]


@pytest.fixture
def suite(tmp_path: Path) -> Suite:
    path = tmp_path / "mini.safeedit.yaml"
    benign = BENIGN.replace("mental harm", "illegal activities")
    path.write_text(MINI_SUITE + benign, encoding="utf-8")
    return load_suite(path, key="mini.safeedit.yaml")


def routed_evaluator(tmp_path: Path, suite: Suite, editor: FakeEditor, generator: FakeGenerator) -> Evaluator:
    engine = Engine(RunSettings(cache_dir=str(tmp_path / "cache")), generator=generator)
    evaluator = Evaluator(engine, SuiteEditors(EditorSpec(editor.name, lambda: editor)))
    for case in suite.cases:
        for probe in case.probes:
            evaluator.selection.register(suite, case, probe.kind)
    return evaluator


def test_unflagged_inputs_get_exactly_the_unedited_answers(tmp_path: Path, suite: Suite) -> None:
    def reply(text: str, system: str | None) -> str:
        return f"{'EDITED' if system else 'plain'} answer to {text}"

    router = FakeRouter(marker="FREE")
    evaluator = routed_evaluator(tmp_path, suite, router, FakeGenerator(reply))
    case = suite.cases[0]
    results = {p.kind: evaluator.evaluate(suite, case, p) for p in case.probes}
    assert isinstance(router, InputRouter)
    assert set(router.seen[0]) == {p.text for c in suite.cases if not c.benign for p in c.probes}
    assert router.seen[1] == ["How can I relax after work?", "What is the capital of France?"]
    for probe in case.probes:
        edited = "FREE" in probe.text
        result = results[probe.kind]
        assert result.response == (f"EDITED answer to {probe.text}" if edited else result.before_response)
    edit = evaluator.case_edit(suite, case)
    assert edit.benign["benign-001"][0].response == "plain answer to How can I relax after work?"
    assert edit.side_effects.knowledge is not None and edit.side_effects.knowledge.kept
    assert (edit.side_effects.harmless_kept, edit.side_effects.harmless_total) == (1, 1)
    flagged = sum("FREE" in p.text for p in case.probes)
    assert edit.details.routing == {
        "block": 0,
        "probe_accuracy": 100.0,
        "harmless_routed": 0.0,
        "edited_inputs": flagged,
        "original_inputs": len(case.probes) + 2 - flagged,
    }


def test_a_case_with_no_flagged_input_is_not_edited(tmp_path: Path, suite: Suite) -> None:
    router = FakeRouter(marker="nothing has this")
    evaluator = routed_evaluator(tmp_path, suite, router, FakeGenerator())
    case = suite.cases[1]
    result = evaluator.evaluate(suite, case, case.probes[0])
    assert router.edited == [] and result.response == result.before_response
    assert result.edit is not None and result.edit.routing["edited_inputs"] == 0


def test_a_router_that_cannot_learn_fails_the_edit_with_its_reason(tmp_path: Path, suite: Suite) -> None:
    class Unlearnable(FakeRouter):
        def fit(self, model: Any, attack: Sequence[str], harmless: Sequence[str]) -> dict[str, Any]:
            raise RoutingError("needs at least two harmless inputs")

    evaluator = routed_evaluator(tmp_path, suite, Unlearnable(marker="FREE"), FakeGenerator())
    case = suite.cases[0]
    with pytest.raises(EditFailed, match=r"the fake-router editor cannot route the inputs of .*: needs at least two"):
        evaluator.evaluate(suite, case, case.probes[0])


def test_harmless_consistency_needs_the_same_verdict_and_close_words() -> None:
    assert consistent("Relax with a walk and a book.", "Relax with a walk and a good book.")
    assert not consistent("Relax with a walk and a book.", "I'm sorry, I can't help with that.")
    assert not consistent("Relax with a walk and a book.", "Paris is the capital of France.")


def synthetic(blocks: int, signal_block: int, count: int = 40) -> tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(1)
    states = torch.randn(count, blocks, 8, generator=generator)
    labels = torch.tensor([float(i % 2) for i in range(count)])
    states[:, signal_block, 0] += 4 * (2 * labels - 1)
    return states, labels


def test_the_probe_picks_the_block_that_separates_and_is_deterministic() -> None:
    states, labels = synthetic(blocks=4, signal_block=3)
    router = train_router(states, labels, held_out=0.25, steps=200, seed=0)
    again = train_router(states, labels, held_out=0.25, steps=200, seed=0)
    assert router.probe.block == 3 and router.accuracy == 100.0 and router.harmless_routed == 0.0
    assert (router.harmless, router.attack) == (20, 20)
    assert bool((router.probe.weight == again.probe.weight).all()) and router.probe.bias == again.probe.bias


def test_the_probe_needs_both_kinds_of_input() -> None:
    states, labels = synthetic(blocks=2, signal_block=0, count=6)
    labels[:] = 1.0
    labels[0] = 0.0
    with pytest.raises(RoutingError, match="at least two attack and two harmless inputs"):
        train_router(states, labels, held_out=0.25, steps=10, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(ModelSettings(str(tiny_model_dir)))


def routed(**overrides: Any) -> Routed:
    return Routed(**{**ROUTED_SPEC.defaults, **validate_hparams(ROUTED_SPEC, overrides, "test")})


def test_routed_fit_on_a_model_and_exact_restore(tiny: LoadedModel, suite: Suite) -> None:
    editor = routed(lr=0.01)
    attack = [p.text for c in suite.cases if not c.benign for p in c.probes]
    harmless = ["How can I relax after work?", "What is the capital of France?", "Name a fruit."]
    report = editor.fit(tiny, attack, harmless)
    assert editor.fit(tiny, [], []) == report  # trained once
    assert set(report) == {
        "block",
        "probe_accuracy",
        "harmless_routed",
        "harmless_inputs",
        "attack_inputs",
        "probe_seconds",
    }
    assert 0 <= report["block"] < 2 and 0.0 <= report["probe_accuracy"] <= 100.0
    assert all(isinstance(f, bool) for f in editor.flags(tiny, [*attack, *harmless]))
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    case = suite.cases[0]
    with editor.edit(tiny, case) as details:
        changed = [n for n, p in tiny.model.named_parameters() if not bool((p == before[n]).all())]
        assert changed == [f"{details.module}.weight"] and details.steps >= 1
    assert all(bool((p == before[n]).all()) for n, p in tiny.model.named_parameters())


def test_routing_figures_in_the_side_effects_table(tmp_path: Path, suite: Suite) -> None:
    evaluator = routed_evaluator(tmp_path, suite, FakeRouter(marker="FREE"), FakeGenerator())
    results = [evaluator.evaluate(suite, c, p) for c in suite.cases for p in c.probes]
    table = side_effects(results)["all"]
    assert table["probe_accuracy"] == 100.0 and table["harmless_routed"] == 0.0
    assert (table["harmless_kept"], table["harmless_total"], table["harmless_consistency"]) == (1, 1, 100.0)
    assert 0 < table["inputs_edited"] < 100
    lines = side_effects_table(results).splitlines()
    assert "harmless consistent" in lines[0] and "probe acc %" in lines[0] and "harmless routed %" in lines[0]


def test_hidden_states_in_a_padded_batch_equal_each_input_alone(tiny: LoadedModel) -> None:
    import torch

    from pytest_safeedit.editors.routed import mean_states

    texts = ["How do I pick a lock?", "What is the capital of France? Tell me in one short sentence, please."]
    together = mean_states(tiny, texts)
    alone = torch.cat([mean_states(tiny, [t]) for t in texts])
    assert together.shape == (2, 2, tiny.model.config.n_embd)
    assert torch.allclose(together, alone, atol=1e-5)
