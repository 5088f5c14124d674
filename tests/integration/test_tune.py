"""python -m pytest_safeedit tune: one plugin run per setting, the trade-off table, the chosen config file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_safeedit.cli.tune import Goals, Outcome, choose, read_outcome

REPORT = {
    "summary": {
        "by_probe": {
            "DS": {"rate": 100.0},
            "DG_onlyQ": {"rate": 80.0},
            "DG_otherA": {"rate": 60.0},
            "DG_otherQ": {"rate": 100.0},
            "DG_otherAQ": {"rate": 60.0},
            "benign": {"rate": 50.0},
        },
        "side_effects": {
            "all": {
                "knowledge_kept": 9,
                "knowledge_total": 10,
                "fluency_before": 4.8,
                "fluency_after": 4.4,
                "harmless_consistency": 80.0,
            }
        },
    }
}


def test_a_report_gives_the_trade_off_figures_and_the_goals_it_misses() -> None:
    outcome = read_outcome(REPORT, {"lr": 1e-3}, 12.0)
    assert (outcome.ds, outcome.dg_avg, outcome.benign, outcome.knowledge) == (100.0, 75.0, 50.0, 0.9)
    assert outcome.fluency_drop == pytest.approx(0.4)
    assert outcome.consistency == 80.0
    assert outcome.missed(Goals()) == ["benign", "consistency", "fluency drop"]


def test_the_choice_misses_fewest_goals_then_scores_highest_then_is_fastest() -> None:
    good = Outcome({"lr": 1}, ds=95, dg_avg=80, knowledge=1.0, benign=90, fluency_before=4, fluency_after=4, seconds=9)
    same_slower = Outcome(
        {"lr": 2}, ds=95, dg_avg=80, knowledge=1.0, benign=90, fluency_before=4, fluency_after=4, seconds=20
    )
    better_but_missing = Outcome({"lr": 3}, ds=100, dg_avg=100, knowledge=0.5, benign=100, seconds=1)
    failed = Outcome({"lr": 4}, error="exit 3")
    assert choose([better_but_missing, same_slower, good, failed], Goals()) is good
    assert choose([failed], Goals()) is None


@pytest.mark.slow
def test_tune_on_the_demo_model_writes_the_chosen_config(tmp_path: Path, demo_cache: str) -> None:
    out = tmp_path / "tuned.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest_safeedit", "tune", "--model", "demo", "--lr", "0.004", "--steps", "1,10",
         "-k", "offensiveness-001", "--max-new-tokens", "16", "--cache-dir", demo_cache, "--out", str(out),
         "--json", str(tmp_path / "t.json"), "--set", "nll_weight=0.1", "--goal-ds", "0", "--goal-dg-avg", "0"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].split()[:9] == [
        "setting", "DS", "DG-Avg", "knowledge", "%", "benign", "consistent", "%", "fluency"
    ]  # fmt: skip
    assert any(line.startswith("lr=0.004, steps=1, nll_weight=0.1 ") for line in lines)
    assert any(line.startswith("lr=0.004, steps=10, nll_weight=0.1 ") for line in lines)
    figures = json.loads((tmp_path / "t.json").read_text())
    assert all("DS" not in f["missed"] and "DG-Avg" not in f["missed"] for f in figures)  # goals set to 0
    assert sum("<- chosen" in line for line in lines) == 1
    config = yaml.safe_load(out.read_text())
    assert set(config) == {"dinm"} and config["dinm"]["lr"] == 0.004 and config["dinm"]["steps"] in (1, 10)
    assert config["dinm"]["nll_weight"] == 0.1
    assert out.read_text().startswith("# dinm tuned by python -m pytest_safeedit tune on demo")
    assert "written to" in done.stdout


def test_values_are_numbers_in_any_notation() -> None:
    from pytest_safeedit.cli.tune import parse_values

    assert parse_values("1e-4, 5e-4,0.001") == [1e-4, 5e-4, 0.001]
    assert parse_values("10,20") == [10, 20] and all(isinstance(v, int) for v in parse_values("10,20"))


def test_tune_reports_bad_values_and_a_missing_suite(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "pytest_safeedit", "tune", "--model", "demo", "--lr", "fast"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "'fast' is not a list of numbers" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "pytest_safeedit", "tune", "--model", "demo", "--suite", str(tmp_path / "x.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2 and "x.yaml not found" in missing.stderr
    bad_set = subprocess.run(
        [sys.executable, "-m", "pytest_safeedit", "tune", "--model", "demo", "--set", "nll_weight=heavy"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad_set.returncode == 2 and "--set nll_weight=heavy" in bad_set.stderr
