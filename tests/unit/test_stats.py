"""Intervals, the lower-bound gate and McNemar's test, against reference values and constructed results."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from math import comb

import pytest

from pytest_safeedit.cases.thresholds import LOWER, POINT, Gate
from pytest_safeedit.judges.base import Verdict
from pytest_safeedit.results.gate import gate_failures
from pytest_safeedit.results.probes import ProbeResult, pass_rate
from pytest_safeedit.results.stats import McNemar, binomial_cdf, wilson

# Wilson 95% score intervals (z = 1.959964), computed independently to 4 decimals.
REFERENCE = [
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (3, 4, 0.3006, 0.9544),
    (1, 2, 0.0945, 0.9055),
    (0, 1, 0.0, 0.7935),
    (36, 180, 0.1481, 0.2644),
    (50, 100, 0.4038, 0.5962),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), REFERENCE)
def test_wilson_matches_the_reference(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def results(passed: int, failed: int, neutral: int = 0, probe: str = "DS", category: str = "c") -> list[ProbeResult]:
    verdicts = [Verdict("safe", 0.0)] * passed + [Verdict("unsafe", 1.0)] * failed + [Verdict("neutral", 0.5)] * neutral
    return [ProbeResult("s", f"c{i}", category, probe, "in", "out", v) for i, v in enumerate(verdicts)]


def test_pass_rate_carries_its_interval() -> None:
    rate = pass_rate(results(3, 1))
    assert rate is not None and rate.interval == pytest.approx((30.06, 95.44), abs=5e-3)
    assert rate.to_dict()["low"] == 30.06 and rate.to_dict()["high"] == 95.44
    all_pass, none_pass = pass_rate(results(5, 0)), pass_rate(results(0, 5))
    assert all_pass is not None and all_pass.interval[1] == 100.0 and all_pass.interval[0] < 100.0
    assert none_pass is not None and none_pass.interval[0] == 0.0 and none_pass.interval[1] > 0.0
    half = pass_rate(results(0, 0, neutral=2))  # a neutral verdict counts as half a pass
    assert half is not None and half.rate == 50.0 and half.interval == pytest.approx((9.45, 90.55), abs=5e-3)


def test_gate_on_the_lower_bound() -> None:
    nine_of_ten = results(9, 1)  # 90.0%, interval [59.6, 98.2]
    assert gate_failures(Gate(min_pass_rate=0.85, on=POINT), nine_of_ten) == []
    (failure,) = gate_failures(Gate(min_pass_rate=0.85, on=LOWER), nine_of_ten)
    assert failure.startswith("total: lower bound 59.6% of the pass rate 90.0% [59.6, 98.2] < required 85.0%")
    many = results(990, 10)  # 99.0%, lower bound 98.2
    assert gate_failures(Gate(min_pass_rate=0.98, on=LOWER), many) == []
    assert gate_failures(Gate(probes={"DS": 0.95}, on=LOWER), many) == []


def test_mcnemar_exact() -> None:
    assert binomial_cdf(2, 12) == pytest.approx(79 / 4096)
    test = McNemar(shared=100, b=10, c=2)
    assert test.p_value == pytest.approx(158 / 4096) and test.significant
    assert McNemar(100, 3, 1).p_value == pytest.approx(0.625) and not McNemar(100, 3, 1).significant
    assert McNemar(100, 0, 0).p_value == 1.0 and McNemar(100, 2, 2).probes_needed() is None
    # Connor's formula: psi = 0.12, delta = 0.08 -> 145 paired probes for 80% power at 5%
    assert test.probes_needed() == 145
    assert McNemar(100, 3, 1).probes_needed() > 100  # too few probes to see a change this small


def test_sampled_pass_rate_is_the_mean_over_samples() -> None:
    from pytest_safeedit.results.probes import SampleOutcome

    safe, unsafe = Verdict("safe", 0.0), Verdict("unsafe", 1.0)
    one = ProbeResult(
        "s", "a", "c", "DS", "in", "x", unsafe, samples=tuple(SampleOutcome("x", v) for v in (safe, unsafe, safe, safe))
    )
    two = ProbeResult("s", "b", "c", "DS", "in", "y", safe, samples=tuple(SampleOutcome("y", safe) for _ in range(4)))
    rate = pass_rate([one, two])
    assert rate is not None
    assert rate.rate == 87.5  # (3/4 + 4/4) / 2
    assert (rate.passed, rate.failed, rate.responses) == (1, 1, 8)  # one probe with an unsafe sample
    assert rate.interval == tuple(100 * x for x in wilson(1.75, 2))


def exact_cdf(k: int, n: int, p: Fraction = Fraction(1, 2)) -> float:
    """P(X <= k) for X ~ Binomial(n, p) in exact rational arithmetic (the reference)."""
    return float(sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)))


@pytest.mark.parametrize(
    ("k", "n"),
    [(0, 1), (2, 12), (40, 100), (500, 1000), (540, 1100), (600, 1200), (900, 1900), (500, 1200), (40, 3000)],
)
def test_binomial_cdf_matches_exact_fractions_past_float_range(k: int, n: int) -> None:
    assert binomial_cdf(k, n) == pytest.approx(exact_cdf(k, n), rel=1e-9, abs=0)
    assert binomial_cdf(k, n, 0.3) == pytest.approx(exact_cdf(k, n, Fraction(3, 10)), rel=1e-9, abs=0)


def test_mcnemar_with_many_changed_probes_neither_overflows_nor_underflows() -> None:
    assert McNemar(2000, 600, 600).p_value == 1.0  # raised OverflowError
    assert McNemar(2000, 560, 540).p_value == pytest.approx(0.5667514479580453, rel=1e-9)
    assert McNemar(2000, 1000, 900).p_value == pytest.approx(0.02310884510890107, rel=1e-9)
    assert McNemar(2000, 700, 500).p_value == pytest.approx(8.535366081034334e-09, rel=1e-9)
    assert McNemar(2000, 40, 1100).p_value == pytest.approx(1.6098980097820576e-269, rel=1e-9)  # was 0
    assert McNemar(200_000, 50_000, 50_400).p_value == pytest.approx(0.2079, abs=1e-3)  # the normal approximation
    assert McNemar(2000, 700, 500).to_dict()["significant"] is True


def test_gates_compare_exact_rates_and_reports_round_them() -> None:
    lower = results(120, 6)  # Wilson lower bound 89.99983%: rounded to 2 decimals it read 90.00
    (failure,) = gate_failures(Gate(min_pass_rate=0.9, on=LOWER), lower)
    assert failure.startswith("total: lower bound 89.9998% of the pass rate 95.2% [89.9998, 97.8] < required 90.0%")
    rate = pass_rate(lower)
    assert rate is not None and rate.interval[0] == pytest.approx(89.999832, abs=1e-6)
    assert rate.to_dict()["low"] == 90.0  # reports round
    point = results(1808, 201)  # 89.995%: rounded to 2 decimals it read 90.00
    (failure,) = gate_failures(Gate(min_pass_rate=0.9, on=POINT), point)
    assert failure.startswith("total: pass rate 89.995% [88.6, 91.2] < required 90.0%")
    assert gate_failures(Gate(min_pass_rate=0.89995, on=POINT), point) == []
    rate = pass_rate(point)
    assert rate is not None and rate.rate == pytest.approx(100 * 1808 / 2009) and rate.to_dict()["rate"] == 90.0


def test_judge_check_gate_compares_the_exact_agreement() -> None:
    from pytest_safeedit.results.probes import ReferenceCheck

    checks = [ReferenceCheck("safe", "unsafe")] * 7999 + [ReferenceCheck("safe", "safe")] * 2001
    checked = [replace(r, reference_check=check) for r, check in zip(results(10_000, 0), checks)]
    (failure,) = gate_failures(Gate(min_judge_agreement=0.9), checked)  # 17999/20000 = 89.995%
    assert "agrees with 17999/20000 reference labels (89.995%) < required 90.0%" in failure
