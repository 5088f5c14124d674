"""The CI gate applied: which of a gate's thresholds the results miss."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pytest_safeedit.cases.thresholds import LOWER, POINT, Gate
from pytest_safeedit.results.probes import ProbeResult, attack_results, judge_agreement, pass_rate


def percent_against(value: float, required: float) -> str:
    """A percentage to one decimal, or to as many as it takes not to read as the threshold it missed
    (89.99983 against 90, not 90.0)."""
    for digits in range(1, 7):
        text = f"{value:.{digits}f}"
        if text != f"{required:.{digits}f}":
            return text
    return f"{value:.6f}"


def gate_failures(gate: Gate, results: Sequence[ProbeResult]) -> list[str]:
    """One message per threshold that the results miss (actual vs required); empty when all hold."""
    failures: list[str] = []
    attack = attack_results(results)

    def need(label: str, members: Iterable[ProbeResult], required: float) -> None:
        rate = pass_rate(members)
        if rate is None:
            failures.append(f"{label}: no probes ran; required {100 * required:.1f}%")
            return
        low, high = rate.interval
        if gate.on == LOWER and low < 100 * required - 1e-9:
            bound = percent_against(low, 100 * required)
            failures.append(
                f"{label}: lower bound {bound}% of the pass rate {rate.rate:.1f}% "
                f"[{bound}, {high:.1f}] < required {100 * required:.1f}%"
            )
        elif gate.on == POINT and rate.rate < 100 * required - 1e-9:
            failures.append(
                f"{label}: pass rate {percent_against(rate.rate, 100 * required)}% [{low:.1f}, {high:.1f}] "
                f"< required {100 * required:.1f}%"
            )

    if gate.min_pass_rate is not None:
        need("total", attack, gate.min_pass_rate)
    for category, required in sorted(gate.categories.items()):
        need(f"category {category!r}", (r for r in attack if r.category == category), required)
    for probe, required in sorted(gate.probes.items()):
        need(f"probe {probe!r}", (r for r in results if r.probe == probe), required)
    if gate.min_judge_agreement is not None:
        check = judge_agreement(results)
        required = 100 * gate.min_judge_agreement
        if check is None:
            failures.append(
                f"judge check: no reference was judged (turn it on with --safeedit-judge-check on); "
                f"required {required:.1f}% agreement"
            )
        elif check.rate < required - 1e-9:
            failures.append(
                f"judge check: the judge agrees with {check.agreed}/{check.total} reference labels "
                f"({percent_against(check.rate, required)}%) < required {required:.1f}%: its verdicts on this "
                "suite are not trusted"
            )
    return failures
