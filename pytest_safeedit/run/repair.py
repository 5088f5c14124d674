"""``--safeedit-repair OUT``: edit the model with every failing case, one edit on top of the other, write the
repaired model as a checkpoint that ``--safeedit-model OUT`` loads, and answer every probe of the run again
with that checkpoint, loaded from its folder as a user would load it.

A seeded share of the failing cases (``--safeedit-repair-holdout``) is kept out of the edits: how the
repaired model does on them is the honest figure for failures the repair has not seen.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_safeedit.cases.model import Case, Probe, Suite
from pytest_safeedit.editors.base import EditDetails, InputRouter, assign_weights, routing_inputs
from pytest_safeedit.results.probes import ProbeResult
from pytest_safeedit.results.repair import RepairOutcome
from pytest_safeedit.run.engine import Engine, ModelUnavailable, ProbeUnanswered

if TYPE_CHECKING:
    from pytest_safeedit.editors.registry import SuiteEditors
    from pytest_safeedit.run.evaluator import Evaluator

#: The provenance file of a repaired checkpoint.
PROVENANCE_FILE = "safeedit_repair.json"

#: A probe of the run: its suite, case, probe and node id.
RunProbe = tuple[Suite, Case, Probe, str]


class RepairError(Exception):
    """The repair could not be made; the message says why and what to do."""


def check_repair_target(out: str) -> None:
    """``out`` may be written: absent, an empty folder, or a checkpoint an earlier repair wrote."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RepairError(f"--safeedit-repair {out}: a file of that name exists; give a folder to write")
    if path.is_dir() and any(path.iterdir()) and not (path / PROVENANCE_FILE).is_file():
        raise RepairError(
            f"--safeedit-repair {out}: the folder is not empty and was not written by a repair; give a new or "
            "empty folder (an earlier repair's folder is replaced)"
        )


def failing_cases(
    results: Sequence[ProbeResult], cases: Mapping[tuple[str, str], tuple[Suite, Case]]
) -> list[tuple[Suite, Case]]:
    """The attack cases with at least one unsafe attack probe, in the run's order."""
    failing: dict[tuple[str, str], None] = {}
    for result in results:
        key = (result.suite_key or result.suite, result.case_id)
        if result.is_attack and not result.passed and key in cases and not cases[key][1].benign:
            failing[key] = None
    return [cases[key] for key in failing]


def held_out_split(
    failing: Sequence[tuple[Suite, Case]], fraction: float, seed: int
) -> tuple[list[tuple[Suite, Case]], list[tuple[Suite, Case]]]:
    """The failing cases to edit with and those held out: ``fraction`` of them (rounded, at least one when
    the fraction is above 0 and two or more fail, never all), drawn with ``seed``; each part in run order."""
    count = round(fraction * len(failing))
    if fraction > 0 and len(failing) >= 2:
        count = min(max(count, 1), len(failing) - 1)
    else:
        count = 0
    order = list(range(len(failing)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [c for i, c in enumerate(failing) if i not in held], [c for i, c in enumerate(failing) if i in held]


@dataclass
class Accumulated:
    """The model with every edit kept, what each edit did, the original value of each changed weight, and
    a routing editor's router (its report and its probe; None for other editors)."""

    model: Any
    edits: list[EditDetails]
    originals: dict[str, Any]
    router: dict[str, Any] | None = None
    probe: Any = None
    #: The version of each changed weight before the first edit changed it.
    versions: dict[str, int] = field(default_factory=dict)


def restore(done: Accumulated) -> None:
    """Put back the original value of every weight the edits changed (the model is as loaded again, and the
    prefixes the generation kept for it serve again: :mod:`pytest_safeedit.backends.stored`)."""
    assign_weights(done.model.model, done.originals, restoring=done.versions)


def accumulate(
    engine: Engine,
    editors: SuiteEditors,
    cases: Sequence[tuple[Suite, Case]],
    held_out: Sequence[tuple[Suite, Case]] = (),
    suites: Sequence[Suite] = (),
) -> Accumulated:
    """Edit the in-process model with each case in turn, each edit on top of the ones before (the caller
    puts the originals back with :func:`restore`; after an error they are put back here). A routing
    editor's router is trained first, with the unedited model, on the inputs of ``suites`` (default: the
    cases' suites) but those of the ``held_out`` cases."""
    first_suite = cases[0][0]
    model = engine.generator.editable(engine.generation_settings(first_suite))
    params = dict(model.model.named_parameters())
    router = None
    first_editor = editors.for_suite(first_suite)
    if isinstance(first_editor, InputRouter):
        suites = list({s.key: s for s in [*suites, *(s for s, _ in cases)]}.values())
        attack, harmless = routing_inputs(suites, exclude={(s.key, c.id) for s, c in held_out})
        try:
            router = first_editor.fit(model, attack, harmless)
        except ValueError as exc:
            raise RepairError(f"the {first_editor.name} editor cannot route: {exc}") from None
    done = Accumulated(model, [], {}, router)
    try:
        _edit_each(editors, done, cases, params)
    except BaseException:
        restore(done)
        raise
    if router is not None:
        done.probe = getattr(getattr(first_editor, "router", None), "probe", None)
    return done


def _edit_each(
    editors: SuiteEditors, done: Accumulated, cases: Sequence[tuple[Suite, Case]], params: dict[str, Any]
) -> None:
    import torch

    model, originals, edits = done.model, done.originals, done.edits
    for suite, case in cases:
        editor = editors.for_suite(suite)
        assert editor is not None
        try:
            with editor.edit(model, case) as details:
                if details.module is None:
                    raise RepairError(
                        f"the {editor.name} editor names no edited weight (EditDetails.module), so its edit "
                        "cannot be kept; repair with an editor that changes weights (dinm, ft-l, routed)"
                    )
                name = details.module + ".weight"
                edited = params[name].detach().clone()
        except RepairError:
            raise
        except ModelUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - said with the case; the repair stops (edits build on each other)
            raise RepairError(
                f"the {editor.name} edit of case {case.id!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if name not in originals:
            originals[name] = params[name].detach().clone()
            done.versions[name] = params[name]._version
        with torch.no_grad():
            params[name].copy_(edited)
        edits.append(details)


def provenance(
    engine: Engine,
    editors: SuiteEditors,
    repaired: Sequence[tuple[Suite, Case]],
    held_out: Sequence[tuple[Suite, Case]],
    edits: Sequence[EditDetails],
    *,
    fraction: float,
    seed: int,
    router: Mapping[str, Any] | None,
    all_suites: Sequence[Suite] = (),
) -> dict[str, Any]:
    """What made the checkpoint: the model, the suites, the editor and its settings, the cases used."""
    suites = {s.key: s for s in [*all_suites, *(s for s, _ in [*repaired, *held_out])]}
    try:
        version = importlib_metadata.version("pytest-safeedit")
    except importlib_metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "made_by": f"pytest-safeedit {version} (--safeedit-repair)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": engine.settings.model,
        "model_identity": engine.metadata().get("model_identity"),
        "suites": [{"key": s.key, "name": s.name, "path": str(s.path)} for s in suites.values()],
        "judge": engine.settings.judge_name,
        "generation": engine.generation_metadata(),
        "editor": editors.name,
        "hyperparameters": {key: editors.hyperparameters(s) for key, s in suites.items()},
        "holdout_fraction": fraction,
        "seed": seed,
        "cases": [{"suite": s.key, "id": c.id, "category": c.category} for s, c in repaired],
        "held_out": [{"suite": s.key, "id": c.id, "category": c.category} for s, c in held_out],
        "edits": [e.to_dict() for e in edits],
        "routing": None if router is None else dict(router),
    }


def save_checkpoint(done: Accumulated, out: str, record: Mapping[str, Any]) -> None:
    """Write the edited model, its tokenizer, the routing (for a routing editor) and the provenance to
    ``out`` (to a folder beside it first, then moved in place: a failure leaves no half checkpoint)."""
    model = done.model
    target = Path(out).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        from pytest_safeedit.backends.gguf_cache import saved_as_plain
        from pytest_safeedit.backends.hf import quiet_transformers

        with quiet_transformers(), saved_as_plain(model.model):
            model.model.save_pretrained(str(work))
            model.tokenizer.save_pretrained(str(work))
        if done.probe is not None:
            from pytest_safeedit.editors.routed import save_routing

            save_routing(work, done.probe, done.originals)
        (work / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", "utf-8")
        mask = os.umask(0)
        os.umask(mask)
        work.chmod(0o777 & ~mask)  # mkdtemp makes it private; a checkpoint is for sharing, as any new folder
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def rerun(
    evaluator: Evaluator, probes: Sequence[RunProbe], unedited: Mapping[str, ProbeResult]
) -> tuple[list[ProbeResult], dict[str, str]]:
    """Every probe answered by ``evaluator``'s model, paired with the unedited result of the same probe."""
    evaluator.engine.expect([r for suite, case, probe, _ in probes for r in evaluator.requests(suite, case, probe)])
    results, unanswered = [], {}
    for suite, case, probe, nodeid in probes:
        try:
            after = evaluator.evaluate(suite, case, probe, nodeid)
        except ProbeUnanswered as exc:
            unanswered[nodeid or f"{case.id}[{probe.kind}]"] = str(exc)
            continue
        before = unedited.get(after.key)
        if before is None:
            continue
        results.append(
            replace(
                after,
                editor="repaired",
                before_response=before.response,
                before_verdict=before.verdict,
                before_samples=before.samples,
            )
        )
    return results, unanswered


def repair(
    evaluator: Evaluator,
    editors: SuiteEditors,
    probes: Sequence[RunProbe],
    results: Sequence[ProbeResult],
    out: str,
    *,
    fraction: float,
    seed: int,
) -> RepairOutcome:
    """The whole repair: the failing cases (of ``results``, the unedited run), the held-out split, the
    accumulated edits (by ``editors``; the run's items ran unedited on ``evaluator``), the checkpoint, and
    the checkpoint's answers to every probe of ``probes``."""
    clock = time.perf_counter()
    editor = editors.name
    cases = {(s.key, c.id): (s, c) for s, c, _, _ in probes}
    to_edit, held = held_out_split(failing_cases(results, cases), fraction, seed)
    outcome = RepairOutcome(
        checkpoint=out,
        editor=editor,
        repaired=tuple((s.key, c.id) for s, c in to_edit),
        held_out=tuple((s.key, c.id) for s, c in held),
    )
    if not to_edit:
        why = "no attack case failed" if not held else "every failing case is held out"
        return replace(outcome, note=f"nothing to repair: {why}; no checkpoint was written")
    suites = list({s.key: s for s, _, _, _ in probes}.values())
    try:
        return _repair(
            evaluator, editors, probes, results, out, outcome,
            to_edit=to_edit, held=held, suites=suites, clock=clock, fraction=fraction, seed=seed,
        )  # fmt: skip
    except (RepairError, ModelUnavailable, OSError) as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - said in the reports, with the cases it was to use
        error = f"{type(exc).__name__}: {exc}"
    return replace(outcome, error=error, seconds=round(time.perf_counter() - clock, 1))


def _repair(
    evaluator: Evaluator,
    editors: SuiteEditors,
    probes: Sequence[RunProbe],
    results: Sequence[ProbeResult],
    out: str,
    outcome: RepairOutcome,
    *,
    to_edit: Sequence[tuple[Suite, Case]],
    held: Sequence[tuple[Suite, Case]],
    suites: Sequence[Suite],
    clock: float,
    fraction: float,
    seed: int,
) -> RepairOutcome:
    """:func:`repair` from its split on: the cases to edit with, those held out, every suite of the run;
    ``clock``: when the repair began."""
    engine = evaluator.engine
    done = accumulate(engine, editors, to_edit, held, suites)
    try:
        record = provenance(
            engine, editors, to_edit, held, done.edits, fraction=fraction, seed=seed, router=done.router,
            all_suites=suites,
        )  # fmt: skip
        save_checkpoint(done, out, record)
    finally:
        restore(done)  # the run's model is as it was loaded (a plugin's hook may share it)
    outcome = replace(outcome, edits=tuple(done.edits))
    del done
    engine.release_model()  # the repaired checkpoint loads next; two copies need not fit together
    checked = engine.for_model(str(Path(out).resolve()))
    unedited = {r.key: r for r in results}
    try:
        repaired, unanswered = rerun(evaluator.with_engine(checked), probes, unedited)
    except ModelUnavailable as exc:
        raise RepairError(f"the repaired checkpoint {out} was written but could not be used: {exc}") from None
    seconds = round(time.perf_counter() - clock, 1)
    outcome = replace(
        outcome, results=tuple(repaired), unanswered=unanswered, seconds=seconds, checkpoint_model=checked.metadata()
    )
    if unanswered and not repaired:
        raise RepairError(
            f"the repaired checkpoint {out} answered none of the probes: {next(iter(unanswered.values()))}"
        )
    return outcome
