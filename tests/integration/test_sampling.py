"""Sampled decoding: N seeded samples per probe, reproducible, cached per sample, the rate a mean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import MINI_SUITE, run_suite


def samples(pytester: pytest.Pytester) -> dict[str, list[str]]:
    data = json.loads((pytester.path / "r.json").read_text())
    return {f"{p['case_id']}[{p['probe']}]": [s["response"] for s in p["samples"]] for p in data["probes"]}


def cache(pytester: pytest.Pytester) -> dict[str, int]:
    counters: dict[str, int] = json.loads((pytester.path / "r.json").read_text())["metadata"]["model"]["cache"]
    return counters


def test_samples_are_seeded_reproducible_and_cached(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    args = ["--safeedit-samples", "3", "--safeedit-temperature", "1.5", "--safeedit-report", "r.json"]
    result = run_suite(pytester, tiny_model_dir, *args, "--safeedit-cache-dir", "c1")
    result.stdout.fnmatch_lines(["total: pass rate *(mean over 21 samples of 7 attack probes)*unsafe sample in */7*"])
    first = samples(pytester)
    assert all(len(s) == 3 for s in first.values()) and cache(pytester)["generated"] == 21
    assert any(len(set(s)) > 1 for s in first.values())  # sampled, not greedy
    again = run_suite(pytester, tiny_model_dir, *args, "--safeedit-cache-dir", "c1")
    assert again.ret == result.ret and samples(pytester) == first and cache(pytester)["generated"] == 0
    fresh = run_suite(pytester, tiny_model_dir, *args, "--safeedit-cache-dir", "c2", "-k", "case-002")
    assert fresh.ret == result.ret
    assert samples(pytester) == {k: v for k, v in first.items() if k.startswith("case-002")}  # per probe
    other_seed = run_suite(pytester, tiny_model_dir, *args, "--safeedit-cache-dir", "c1", "--safeedit-seed", "9")
    assert other_seed.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert samples(pytester) != first and cache(pytester)["generated"] == 21
    greedy = run_suite(pytester, tiny_model_dir, "--safeedit-report", "r.json", "--safeedit-cache-dir", "c1")
    assert greedy.ret == pytest.ExitCode.TESTS_FAILED
    assert all(p["samples"] is None for p in json.loads((pytester.path / "r.json").read_text())["probes"])


def test_sampling_with_an_editor(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE)
    run_suite(
        pytester,
        tiny_model_dir,
        "--safeedit-samples",
        "2",
        "--safeedit-editor",
        "self-reminder",
        "--safeedit-report",
        "r.json",
    )
    probes = json.loads((pytester.path / "r.json").read_text())["probes"]
    assert all(len(p["samples"]) == 2 and len(p["before_samples"]) == 2 for p in probes)
    assert all(p["response"] in [s["response"] for s in p["samples"]] for p in probes)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--safeedit-temperature", "0"], "*'0' is not above 0*"),
        (["--safeedit-top-p", "1.5"], "*1.5 is above 1*"),
        (["--safeedit-samples", "0"], "*0 is too small*"),
    ],
)
def test_bad_sampling_options(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
