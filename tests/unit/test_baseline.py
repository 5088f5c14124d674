"""What a baseline or a shard must share with a run: the settings that change a response, and only those."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_safeedit.config.settings import SAMPLED
from pytest_safeedit.reports.baseline import setup_differences

GREEDY = {
    "max_new_tokens": 64, "max_input_tokens": None, "batch_size": 32, "decoding": "greedy", "samples": 1,
    "temperature": 1.0, "top_p": 1.0, "seed": 0, "chat_template": "auto",
}  # fmt: skip


def meta(**generation: Any) -> dict[str, Any]:
    return {"judge": "default", "editor": "none", "generation": {"suite.yaml": {**GREEDY, **generation}}}


@pytest.mark.parametrize(
    "change",
    [
        {"batch_size": 64},  # batched equals one at a time: the cache key leaves it out
        {"batch_size": 16, "seed": 3},
        {"temperature": 0.7, "top_p": 0.9, "samples": 4},  # sampling settings do not act under greedy decoding
    ],
)
def test_settings_that_do_not_change_a_response_are_no_setup_difference(change: dict[str, Any]) -> None:
    assert setup_differences(meta(), meta(**change)) == []


@pytest.mark.parametrize(
    "change",
    [
        {"max_new_tokens": 128},
        {"max_input_tokens": 512},
        {"decoding": SAMPLED, "samples": 4},
        {"chat_template": "off"},
    ],
)
def test_settings_that_change_a_response_are_a_setup_difference(change: dict[str, Any]) -> None:
    (difference,) = setup_differences(meta(), meta(**change))
    assert difference.startswith("generation: ")
    key = next(iter(change))
    assert f"'{key}'" in difference and "batch_size" not in difference


def test_sampled_runs_compare_their_sampling_settings() -> None:
    sampled = {"decoding": SAMPLED, "samples": 4}
    assert setup_differences(meta(**sampled), meta(**sampled, batch_size=64)) == []
    (difference,) = setup_differences(meta(**sampled), meta(**sampled, temperature=0.7))
    assert "'temperature'" in difference
