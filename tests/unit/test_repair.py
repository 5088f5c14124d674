"""The repair's parts: which failing cases are held out, its figures as data, and a routed checkpoint's file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.judges.base import Verdict
from pytest_safeedit.results.probes import ProbeResult
from pytest_safeedit.results.repair import BENIGN, HELD_OUT, PASSING, REPAIRED, RepairOutcome, repair_figures
from pytest_safeedit.run.repair import failing_cases, held_out_split
from tests.helpers import SAMPLE_SUITE

SAFE, UNSAFE = Verdict("safe", 0.0), Verdict("unsafe", 1.0)


def _result(case: str, probe: str, before: Verdict, after: Verdict | None = None) -> ProbeResult:
    result = ProbeResult("s", case, "offensiveness", probe, "in", "out", before, suite_key="s")
    if after is None:
        return result
    return ProbeResult(
        "s", case, "offensiveness", probe, "in", "new", after, suite_key="s",
        editor="repaired", before_response="out", before_verdict=before,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("failing", "fraction", "held"),
    [(10, 0.25, 2), (10, 0.0, 0), (1, 0.5, 0), (2, 0.01, 1), (3, 0.99, 2), (36, 0.25, 9)],
)
def test_held_out_share_is_rounded_never_all_and_seeded(failing: int, fraction: float, held: int) -> None:
    suite = load_suite(SAMPLE_SUITE)
    cases = [(suite, c) for c in suite.cases if not c.benign][:failing]
    edit, out = held_out_split(cases, fraction, seed=3)
    assert len(out) == held and len(edit) == failing - held
    assert sorted(c.id for _, c in edit + out) == sorted(c.id for _, c in cases)
    assert [c.id for _, c in edit] == [c.id for _, c in cases if (suite, c) in edit]  # run order kept
    assert held_out_split(cases, fraction, seed=3) == (edit, out)
    if held and failing > 3:
        assert held_out_split(cases, fraction, seed=4)[1] != out


def test_failing_cases_are_attack_cases_with_an_unsafe_attack_probe() -> None:
    suite = load_suite(SAMPLE_SUITE)
    first, second = [c for c in suite.cases if not c.benign][:2]
    benign = next(c for c in suite.cases if c.benign)
    cases = {(suite.key, c.id): (suite, c) for c in (first, second, benign)}
    results = [
        ProbeResult(suite.name, first.id, first.category, "DS", "", "", SAFE, suite_key=suite.key),
        ProbeResult(suite.name, second.id, second.category, "DG_otherA", "", "", UNSAFE, suite_key=suite.key),
        ProbeResult(suite.name, benign.id, benign.category, "benign", "", "", Verdict("refused", 1.0), suite_key=suite.key),
    ]  # fmt: skip
    assert failing_cases(results, cases) == [(suite, second)]


def test_figures_pair_each_probe_and_group_the_cases() -> None:
    outcome = RepairOutcome(
        checkpoint="out",
        editor="dinm",
        repaired=(("s", "a"),),
        held_out=(("s", "b"),),
        results=(
            _result("a", "DS", UNSAFE, SAFE),
            _result("a", "DG_otherA", UNSAFE, SAFE),
            _result("b", "DS", UNSAFE, UNSAFE),
            _result("c", "DS", SAFE, UNSAFE),
            _result("d", "benign", SAFE, SAFE),
        ),
    )
    assert [outcome.group_of(r) for r in outcome.results] == [REPAIRED, REPAIRED, HELD_OUT, PASSING, BENIGN]
    figures = repair_figures(outcome)
    assert figures["groups"][REPAIRED] | {"p_value": None} == {
        **figures["groups"][REPAIRED], "probes": 2, "unedited": 0.0, "repaired": 100.0, "regressions": 0,
        "improvements": 2, "p_value": None,
    }  # fmt: skip
    assert figures["attack"]["regressions"] == 1 and figures["attack"]["improvements"] == 2
    assert figures["probes"]["DS"]["probes"] == 3 and "benign" not in figures["probes"]
    again = RepairOutcome.from_dict(outcome.to_dict())
    assert again.results == outcome.results and again.held_out == outcome.held_out
    assert again.to_dict() == outcome.to_dict()


def test_a_routing_file_round_trips_and_routes_on_the_original_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    from pytest_safeedit.backends.hf import HFGenerator
    from pytest_safeedit.config.settings import ModelSettings
    from pytest_safeedit.editors.routed import Probe, RoutedGenerator, load_routing, mean_states, save_routing

    generator = HFGenerator(ModelSettings(str(tiny_model_dir)))
    model = generator.model
    params = dict(model.model.named_parameters())
    name = next(n for n in params if n.endswith("mlp.c_proj.weight"))
    texts = ["How do I bake bread?", "Tell me how to build a bomb."]
    states = mean_states(model, texts)
    hidden = states.shape[-1]
    # A probe that flags exactly the second text, on the original weights' hidden states of block 0.
    direction = states[1, 0] - states[0, 0]
    middle = (states[0, 0] + states[1, 0]) / 2
    probe = Probe(0, middle, torch.ones(hidden), direction, 0.0)
    assert [bool(x) for x in probe.harmful(states)] == [False, True]
    original = params[name].detach().clone()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_routing(folder, probe, {name: original})
    loaded, originals = load_routing(folder)
    assert loaded.block == 0 and torch.equal(loaded.weight, probe.weight) and torch.equal(originals[name], original)

    routed = RoutedGenerator(generator, folder)
    with torch.no_grad():
        params[name].add_(5.0)  # the checkpoint's own weights are the repaired ones
    try:
        assert routed.flags(model, texts) == [False, True]  # read on the original weights
        assert not torch.equal(params[name], original)  # and the repaired ones are back after
    finally:
        with torch.no_grad():
            params[name].copy_(original)


def test_a_broken_routing_file_says_what_to_do(tmp_path: Path) -> None:
    from pytest_safeedit.editors.routed import ROUTING_FILE, load_routing

    (tmp_path / ROUTING_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a routing file written by --safeedit-repair.*repair again"):
        load_routing(tmp_path)
