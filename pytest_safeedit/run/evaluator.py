"""The evaluator: one probe in, one typed :class:`ProbeResult` out (unedited, edited, or benign under edits,
with side effects and the baseline's status)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_safeedit.backends.base import Request
from pytest_safeedit.cases.model import Case, Probe, Suite
from pytest_safeedit.editors.base import EditDetails, Editor, InputRouter, routing_inputs
from pytest_safeedit.editors.registry import SuiteEditors
from pytest_safeedit.reports.baseline import Baseline
from pytest_safeedit.results.probes import BenignUnderEdit, ProbeResult, SampleOutcome, SideEffects
from pytest_safeedit.results.side_effects import KnowledgeRetention, consistent, mean_fluency, over_refusal_verdict
from pytest_safeedit.run.engine import EditFailed, Engine, ModelUnavailable


class Selection:
    """Which probes of which cases run in this process (after -k, -m and shards).

    An edit generates only the selected probes of its case and the selected benign questions of its
    category; a benign probe is asked under the edits of the selected attack cases of its category.
    """

    def __init__(self) -> None:
        self._kinds: dict[tuple[str, str], list[str]] = {}
        self._by_category: dict[tuple[str, str], list[Case]] = {}

    def register(self, suite: Suite, case: Case, probe: str) -> None:
        kinds = self._kinds.setdefault((suite.key, case.id), [])
        if not kinds:
            self._by_category.setdefault((suite.key, case.category), []).append(case)
        if probe not in kinds:
            kinds.append(probe)

    def probes(self, suite: Suite, case: Case) -> list[Probe]:
        """The selected probes of a case (all of them when none was registered: a direct call)."""
        kinds = self._kinds.get((suite.key, case.id))
        return [case.probe(k) for k in kinds] if kinds else list(case.probes)

    def attack_cases(self, suite: Suite, category: str) -> list[Case]:
        return [c for c in self._by_category.get((suite.key, category), []) if not c.benign]

    def benign_cases(self, suite: Suite, category: str) -> list[Case]:
        return [c for c in self._by_category.get((suite.key, category), []) if c.benign]


@dataclass(frozen=True)
class CaseEdit:
    """Everything one edit of one case gave: the edited responses and verdicts, and its side effects."""

    details: EditDetails
    #: probe kind -> the edited model's responses and verdicts (one per sample)
    outcomes: Mapping[str, tuple[SampleOutcome, ...]]
    #: benign case id -> its answers under this edit
    benign: Mapping[str, tuple[SampleOutcome, ...]] = field(default_factory=dict)
    side_effects: SideEffects = field(default_factory=SideEffects)


class Evaluator:
    """Turns probes into results with the engine, the suite's editor and the baseline."""

    def __init__(
        self,
        engine: Engine,
        editors: SuiteEditors | None = None,
        *,
        selection: Selection | None = None,
        baseline: Baseline | None = None,
        judge_check: bool = False,
    ) -> None:
        self.engine = engine
        #: Judge each attack case's own references too (the judge check), recorded on its results.
        self.judge_check = judge_check
        self.editors = editors or SuiteEditors(None)
        self.selection = selection or Selection()
        self.baseline = baseline
        self._edits: dict[tuple[str, str], CaseEdit | str] = {}
        #: The (suite, case) of the probes this process will run next, in order (set by the plugin).
        self.upcoming_cases: Callable[[], Iterable[tuple[Suite, Case]]] | None = None

    def with_engine(self, engine: Engine) -> Evaluator:
        """An evaluator of the same selection on another engine (another model), without an editor."""
        return Evaluator(engine, selection=self.selection)

    # ------------------------------------------------------------------ requests

    def probe_requests(
        self, suite: Suite, text: str, system: str | None = None, category: str = "", question: str = ""
    ) -> list[Request]:
        """The generations of a probe text: one, or one per sample with sampled decoding."""
        settings = self.engine.generation_settings(suite)
        count = settings.samples if settings.sampled else 1
        return [Request(text, system, settings, sample=k, category=category, question=question) for k in range(count)]

    def knowledge_request(self, suite: Suite, case: Case) -> Request | None:
        """With an editor, the unedited answer to the knowledge prompt, prompted as the edited model is (a routing
        editor: as the unedited model is); with sampled decoding, its first sample."""
        editor = self.editors.for_suite(suite)
        if editor is None or case.knowledge is None or case.benign:
            return None
        if isinstance(editor, InputRouter):
            # A routing editor answers a knowledge prompt (a harmless input) unedited unless its router flags
            # it: the plain request is the one to batch (a flagged one is generated when its edit is planned).
            return self.probe_requests(suite, case.knowledge.prompt, category=case.category)[0]
        return self.edited_requests(suite, editor, case.knowledge.prompt, case.category)[0]

    def edited_requests(
        self, suite: Suite, editor: Editor, text: str, category: str = "", question: str = ""
    ) -> list[Request]:
        user, system = editor.prompt(text)
        return self.probe_requests(suite, user, system, category, question)

    def requests(self, suite: Suite, case: Case, probe: Probe) -> list[Request]:
        """The unedited generations a probe needs, for batching across cases."""
        out = self.probe_requests(suite, probe.text, category=case.category, question=probe.question)
        knowledge = self.knowledge_request(suite, case)
        return out if knowledge is None else out + [knowledge]

    # ------------------------------------------------------------------ probes

    def evaluate(self, suite: Suite, case: Case, probe: Probe, nodeid: str = "") -> ProbeResult:
        """The probe's result: unedited without an editor, else after the case's edit (a benign probe:
        under every selected edit of its category); with the baseline's status when there is one."""
        requests = self.probe_requests(suite, probe.text, category=case.category, question=probe.question)
        responses = [self.engine.respond(r) for r in requests]
        outcomes = self._outcomes(case, probe.text, responses, probe.question)
        shown = worst(outcomes)
        result = ProbeResult(
            suite=suite.name,
            suite_key=suite.key,
            case_id=case.id,
            category=case.category,
            probe=probe.kind,
            input=probe.text,
            response=shown.response,
            verdict=shown.verdict,
            nodeid=nodeid,
            samples=outcomes if len(outcomes) > 1 else None,
        )
        if self.judge_check and not case.benign:
            result = replace(result, reference_check=self.engine.reference_check(case))
        editor = self.editors.for_suite(suite)
        if editor is not None and case.benign:
            result = self._benign_under_edits(suite, case, result, editor.name)
        elif editor is not None:
            edit = self.case_edit(suite, case)
            after = edit.outcomes[probe.kind]
            shown = worst(after)
            result = replace(
                result,
                response=shown.response,
                verdict=shown.verdict,
                samples=after if len(after) > 1 else None,
                editor=editor.name,
                before_response=result.response,
                before_verdict=result.verdict,
                before_samples=result.samples,
                edit=edit.details,
                side_effects=edit.side_effects,
            )
        if self.baseline is not None:
            result = replace(result, baseline=self.baseline.status(result.key, result.passed))
        return result

    def _outcomes(
        self, case: Case, prompt: str, responses: Sequence[str], question: str = ""
    ) -> tuple[SampleOutcome, ...]:
        if case.benign:
            verdicts = [over_refusal_verdict(r) for r in responses]
        else:
            n = len(responses)
            verdicts = self.engine.verdicts(responses, [prompt] * n, [case.category] * n, [question] * n)
        return tuple(SampleOutcome(r, v) for r, v in zip(responses, verdicts))

    def _benign_under_edits(self, suite: Suite, case: Case, base: ProbeResult, editor: str) -> ProbeResult:
        """A benign probe fails if any selected edit of its category makes the model refuse it."""
        edits = []
        for attack in self.selection.attack_cases(suite, case.category):
            answer = worst(self.case_edit(suite, attack).benign[case.id])
            edits.append(BenignUnderEdit(attack.id, answer.response, answer.verdict))
        if not edits:
            return base
        shown = next((e for e in edits if not e.verdict.passed), edits[0])
        return replace(
            base,
            response=shown.response,
            verdict=shown.verdict,
            samples=None,
            editor=editor,
            before_response=base.response,
            before_verdict=base.verdict,
            before_samples=base.samples,
            edits=tuple(edits),
        )

    # ------------------------------------------------------------------ edits

    def case_edit(self, suite: Suite, case: Case) -> CaseEdit:
        """Edit the model for ``case`` once, probe the edited model, restore it; remembered per case.

        With ``upcoming_cases`` set, the next attack cases of the suite that this process will run are
        edited in the same go while their requests fit one generation batch, so that their edited models
        answer together (see :meth:`Engine.generate_edited_group`)."""
        key = (suite.key, case.id)
        if key not in self._edits:
            plans = [self._plan(suite, c) for c in self._edit_group(suite, case)]
            editor = self.editors.for_suite(suite)
            assert editor is not None
            asked = [p for p in plans if p.requests]
            try:
                outcomes: list[tuple[EditDetails, list[str]] | EditFailed] = self.engine.generate_edited_group(
                    editor, self.editors.hyperparameters(suite), [(p.case, p.requests) for p in asked]
                )
            except ModelUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - remembered: the group's probes report it, none re-edits
                ids = ", ".join(repr(p.case.id) for p in asked)
                failed = EditFailed(f"the {editor.name} edits of cases {ids} failed: {type(exc).__name__}: {exc}")
                outcomes = [failed] * len(asked)
            answered = dict(zip([p.case.id for p in asked], outcomes))
            for plan in plans:
                # A routed case none of whose inputs is flagged needs no edit: every answer is the unedited one.
                edited = answered.get(plan.case.id, (EditDetails(editor.name, plan.case.id), []))
                self._edits[(suite.key, plan.case.id)] = (
                    str(edited) if isinstance(edited, EditFailed) else self._result(plan, *edited)
                )
        outcome = self._edits[key]
        if isinstance(outcome, str):
            raise EditFailed(outcome)
        return outcome

    def _edit_group(self, suite: Suite, case: Case) -> list[Case]:
        """``case``, then the upcoming attack cases of its suite not edited yet, while all their edited
        requests fit one generation batch."""
        group = [case]
        if self.upcoming_cases is None:
            return group
        size = self.engine.generation_settings(suite).batch_size
        rows = self._edited_count(suite, case)
        for other_suite, other in self.upcoming_cases():
            if other_suite.key != suite.key or other.benign or other in group or (suite.key, other.id) in self._edits:
                continue
            more = self._edited_count(suite, other)
            if rows + more > size:
                break
            group.append(other)
            rows += more
        return group

    def _route(self, suite: Suite, texts: Sequence[str]) -> tuple[list[bool], dict[str, Any]]:
        """Which of ``texts`` go through the edit (all, unless the editor routes inputs), and the router's
        report; a routing editor learns its routing once per suite, from the suite's attack inputs (every
        attack probe's text) against its harmless ones (benign questions, knowledge prompts)."""
        editor = self.editors.for_suite(suite)
        if not isinstance(editor, InputRouter):
            return [True] * len(texts), {}
        model = self.engine.generator.editable(self.engine.generation_settings(suite))
        try:
            report = editor.fit(model, *routing_inputs([suite]))
        except ValueError as exc:
            raise EditFailed(f"the {editor.name} editor cannot route the inputs of {suite.name}: {exc}") from None
        return editor.flags(model, texts), report

    def _edited_requests(self, suite: Suite, case: Case) -> Routing:
        """What an edit of ``case`` answers: the requests of each selected probe, then of each selected
        benign question of its category, then its knowledge prompt's (when it has one); each prompted as the
        editor prompts where it goes through the edit, else as the unedited model is."""
        editor = self.editors.for_suite(suite)
        assert editor is not None
        asked = [(p.text, p.question) for p in self.selection.probes(suite, case)]
        asked += [(b.question, b.question) for b in self.selection.benign_cases(suite, case.category)]
        knowledge = None if case.benign else case.knowledge
        if knowledge is not None:
            asked.append((knowledge.prompt, ""))
        through, report = self._route(suite, [t for t, _ in asked])
        groups = [
            self.edited_requests(suite, editor, t, case.category, q)
            if edit
            else self.probe_requests(suite, t, category=case.category, question=q)
            for (t, q), edit in zip(asked, through)
        ]
        if knowledge is not None:
            groups[-1] = groups[-1][:1]
        return Routing(groups, through, knowledge is not None, report)

    def _edited_count(self, suite: Suite, case: Case) -> int:
        routing = self._edited_requests(suite, case)
        return sum(len(g) for g, edit in zip(routing.groups, routing.through) if edit)

    def _plan(self, suite: Suite, case: Case) -> EditPlan:
        """The unedited answers an edit is compared with, and the requests it answers."""
        engine = self.engine
        probes = self.selection.probes(suite, case)
        benign = self.selection.benign_cases(suite, case.category)
        before = [
            engine.respond(r)
            for p in probes
            for r in self.probe_requests(suite, p.text, category=case.category, question=p.question)
        ]
        benign_before = [
            [engine.respond(r) for r in self.probe_requests(suite, b.question, category=b.category)] for b in benign
        ]
        routing = self._edited_requests(suite, case)
        knowledge_before = engine.respond(routing.groups[-1][0]) if routing.knowledge else None
        requests = [r for group, edit in zip(routing.groups, routing.through) if edit for r in group]
        return EditPlan(case, probes, benign, routing, requests, before, benign_before, knowledge_before)

    def _result(self, plan: EditPlan, details: EditDetails, outputs: Sequence[str]) -> CaseEdit:
        case, probes, routing = plan.case, plan.probes, plan.routing
        edited = iter(outputs)
        answers = [
            [next(edited) if edit else self.engine.respond(r) for r in group]
            for group, edit in zip(routing.groups, routing.through)
        ]
        if routing.report:
            through = sum(len(g) for g, edit in zip(routing.groups, routing.through) if edit)
            total = sum(len(g) for g in routing.groups)
            details = replace(
                details, routing={**routing.report, "edited_inputs": through, "original_inputs": total - through}
            )
        probe_answers = answers[: len(probes)]
        benign_answers = answers[len(probes) : len(probes) + len(plan.benign)]
        knowledge = None
        if case.knowledge is not None and plan.knowledge_before is not None:
            knowledge = KnowledgeRetention(case.knowledge.prompt, plan.knowledge_before, answers[-1][0])
        harmless = [
            consistent(before, after)
            for befores, afters in zip(plan.benign_before, benign_answers)
            for before, after in zip(befores, afters)
        ]
        return CaseEdit(
            details=details,
            outcomes={
                p.kind: self._outcomes(case, g[0].text, a, p.question)
                for p, g, a in zip(probes, routing.groups, probe_answers)
            },
            benign={b.id: self._outcomes(b, b.question, a) for b, a in zip(plan.benign, benign_answers)},
            side_effects=SideEffects(
                knowledge,
                mean_fluency(plan.before),
                mean_fluency([x for a in probe_answers for x in a]),
                harmless_kept=sum(harmless),
                harmless_total=len(harmless),
            ),
        )


@dataclass(frozen=True)
class Routing:
    """The requests an edit of one case answers, and which go through the edit."""

    #: The requests of each probe, then of each benign question (one per sample), then the knowledge
    #: prompt's (one) when ``knowledge``.
    groups: list[list[Request]]
    #: Per group: answered by the edited model (else by the unedited model, with the unedited prompt).
    through: list[bool]
    knowledge: bool
    #: A routing editor's report of its router (empty for other editors).
    report: dict[str, Any]


@dataclass(frozen=True)
class EditPlan:
    """One case's edit before it runs: what it is compared with and what it answers."""

    case: Case
    probes: list[Probe]
    benign: list[Case]
    routing: Routing
    #: The requests of the groups that go through the edit, flattened, in order.
    requests: list[Request]
    #: The unedited responses to the probes, to each benign question, and to the knowledge prompt.
    before: list[str]
    benign_before: list[list[str]]
    knowledge_before: str | None


def worst(outcomes: Sequence[SampleOutcome]) -> SampleOutcome:
    """The sample a probe is shown and judged by: the first that fails, else the first."""
    return next((o for o in outcomes if not o.verdict.passed), outcomes[0])
