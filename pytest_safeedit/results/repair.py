"""A repair's outcome as plain data: which failing cases were edited and which held out, and the repaired
model's results paired with the unedited ones, with McNemar's test per category, per probe and per group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pytest_safeedit.editors.base import EditDetails
from pytest_safeedit.results.probes import ProbeResult, attack_results, pass_rate
from pytest_safeedit.results.stats import McNemar, guarded

#: The groups of probes a repair is measured on.
REPAIRED = "repaired cases"
HELD_OUT = "held-out failing cases"
PASSING = "cases that passed unedited"
BENIGN = "benign questions"


@dataclass(frozen=True)
class RepairOutcome:
    """What ``--safeedit-repair`` did.

    ``results`` are the repaired model's results, each carrying the unedited model's response and verdict
    as its ``before_*`` (as an edited result does), in the run's order.
    """

    checkpoint: str
    editor: str
    #: (suite key, case id) of the failing cases the edits were made from, in order, and of those held out.
    repaired: tuple[tuple[str, str], ...] = ()
    held_out: tuple[tuple[str, str], ...] = ()
    edits: tuple[EditDetails, ...] = ()
    results: tuple[ProbeResult, ...] = ()
    #: Why the repair could not be made or measured (None when it was); a failure of the run.
    error: str | None = None
    #: Why no repair was needed or made, when that is no failure (nothing failed, the run was stopped).
    note: str | None = None
    #: Probes of the re-run that got no result (a generation error), with why.
    unanswered: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: The repaired checkpoint as the re-run loaded it (its content digest, class, dtype, routing).
    checkpoint_model: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def _edited_with(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.repaired)

    @cached_property
    def _kept_out(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.held_out)

    def group_of(self, result: ProbeResult) -> str:
        key = (result.suite_key or result.suite, result.case_id)
        if not result.is_attack:
            return BENIGN
        if key in self._edited_with:
            return REPAIRED
        if key in self._kept_out:
            return HELD_OUT
        return PASSING

    def groups(self) -> dict[str, list[ProbeResult]]:
        out: dict[str, list[ProbeResult]] = {REPAIRED: [], HELD_OUT: [], PASSING: [], BENIGN: []}
        for result in self.results:
            out[self.group_of(result)].append(result)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "editor": self.editor,
            "repaired": [list(k) for k in self.repaired],
            "held_out": [list(k) for k in self.held_out],
            "edits": [e.to_dict() for e in self.edits],
            "error": self.error,
            "note": self.note,
            "unanswered": dict(self.unanswered),
            "seconds": self.seconds,
            "checkpoint_model": dict(self.checkpoint_model),
            "figures": guarded("the repair's figures", lambda: repair_figures(self), lambda r: {"error": r}),
            "probes": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RepairOutcome:
        return cls(
            checkpoint=str(data["checkpoint"]),
            editor=str(data["editor"]),
            repaired=tuple((str(s), str(c)) for s, c in data.get("repaired") or []),
            held_out=tuple((str(s), str(c)) for s, c in data.get("held_out") or []),
            edits=tuple(EditDetails.from_dict(e) for e in data.get("edits") or []),
            results=tuple(ProbeResult.from_dict(r) for r in data.get("probes") or []),
            error=data.get("error"),
            note=data.get("note"),
            unanswered=dict(data.get("unanswered") or {}),
            seconds=float(data.get("seconds") or 0.0),
            checkpoint_model=dict(data.get("checkpoint_model") or {}),
        )


def paired(results: Sequence[ProbeResult]) -> McNemar:
    """McNemar's exact test, unedited against repaired, on the same probes."""
    return McNemar(
        shared=len(results),
        b=sum(r.before().passed and not r.passed for r in results),
        c=sum(not r.before().passed and r.passed for r in results),
    )


def _rates(results: Sequence[ProbeResult]) -> dict[str, Any]:
    before, after = pass_rate([r.before() for r in results]), pass_rate(list(results))
    test = paired(results)
    return {
        "probes": len(results),
        "unedited": None if before is None else round(before.rate, 2),
        "repaired": None if after is None else round(after.rate, 2),
        **test.to_dict(),
        "p_value": test.p_value,
    }


def repair_figures(outcome: RepairOutcome) -> dict[str, Any]:
    """Pass rates unedited -> repaired, with McNemar's test: per group, per category and per probe (attack
    probes), as plain data."""
    attack = attack_results(outcome.results)
    by_category: dict[str, list[ProbeResult]] = {}
    by_probe: dict[str, list[ProbeResult]] = {}
    for result in attack:
        by_category.setdefault(result.category, []).append(result)
        by_probe.setdefault(result.probe, []).append(result)
    return {
        "groups": {name: _rates(members) for name, members in outcome.groups().items() if members},
        "attack": _rates(attack) if attack else None,
        "categories": {name: _rates(members) for name, members in by_category.items()},
        "probes": {name: _rates(members) for name, members in by_probe.items()},
    }


def _row(name: str, figures: Mapping[str, Any]) -> list[str]:
    def rate(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}"

    changed = f"{figures['regressions']} / {figures['improvements']}"
    return [
        name,
        str(figures["probes"]),
        f"{rate(figures['unedited'])} -> {rate(figures['repaired'])}",
        changed,
        p_text(figures["p_value"]),
    ]


def p_text(p: float) -> str:
    return "< 1e-6" if p < 1e-6 else f"{p:.2g}"


def repair_table(outcome: RepairOutcome) -> list[list[str]]:
    """Rows (what, probes, unedited -> repaired, worse / better, McNemar p) for the groups, then the
    categories and the probes of the attack probes."""
    figures = repair_figures(outcome)
    rows = [_row(name, f) for name, f in figures["groups"].items()]
    if figures["attack"] is not None:
        rows.append(_row("all attack probes", figures["attack"]))
    rows += [_row(f"category {name}", f) for name, f in figures["categories"].items()]
    rows += [_row(f"probe {name}", f) for name, f in figures["probes"].items()]
    return rows


REPAIR_HEADERS = ["probes of", "n", "unedited -> repaired", "worse / better", "McNemar p"]


def repair_lines(outcome: RepairOutcome) -> list[str]:
    """The repair in words and a table, for the terminal."""
    from tabulate import tabulate

    head = [
        f"editor: {outcome.editor}   checkpoint: {outcome.checkpoint}",
        f"{len(outcome.repaired)} failing case(s) to repair with, one edit on top of the other; "
        f"{len(outcome.held_out)} held out (not edited with: their figure is the honest one for cases the repair "
        "has not seen)",
    ]
    if outcome.error:
        return [*head, f"repair FAILED: {outcome.error}"]
    if outcome.note:
        return [*head, f"no repair: {outcome.note}"]
    if not outcome.results:
        return head
    table = tabulate(repair_table(outcome), headers=REPAIR_HEADERS, tablefmt="simple", disable_numparse=True)
    lines = [
        *head,
        f"the checkpoint, loaded as --safeedit-model {outcome.checkpoint}, answered every probe again "
        f"({outcome.seconds:.1f} s for the edits, the save and the re-run)",
        *table.splitlines(),
        "worse / better: probes safe unedited and unsafe repaired / the other way; p: McNemar's exact test",
    ]
    for key, why in list(outcome.unanswered.items())[:5]:
        lines.append(f"  no answer from the repaired model for {key}: {why}")
    return lines
