"""The evaluator: one probe in, one typed :class:`ProbeResult` out (unedited, edited, or benign under edits,
with side effects and the baseline's status)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pytest_safeedit.baseline import Baseline
from pytest_safeedit.editor import EditDetails, Editor
from pytest_safeedit.editor_registry import SuiteEditors
from pytest_safeedit.engine import EditFailed, Engine
from pytest_safeedit.generation import Request
from pytest_safeedit.judges import Verdict
from pytest_safeedit.results import BenignUnderEdit, ProbeResult, SideEffects
from pytest_safeedit.side_effects import KnowledgeRetention, mean_fluency, over_refusal_verdict
from pytest_safeedit.suite import Case, Probe, Suite


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
    responses: Mapping[str, str]
    verdicts: Mapping[str, Verdict]
    #: benign case id -> (response, verdict) under this edit
    benign: Mapping[str, tuple[str, Verdict]] = field(default_factory=dict)
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
    ) -> None:
        self.engine = engine
        self.editors = editors or SuiteEditors(None)
        self.selection = selection or Selection()
        self.baseline = baseline
        self._edits: dict[tuple[str, str], CaseEdit | str] = {}

    # ------------------------------------------------------------------ requests

    def probe_request(self, suite: Suite, text: str) -> Request:
        """The unedited generation of a probe text."""
        return Request(text, None, self.engine.generation_settings(suite))

    def knowledge_request(self, suite: Suite, case: Case) -> Request | None:
        """With an editor, the unedited answer to the knowledge prompt, prompted as the edited model is."""
        editor = self.editors.for_suite(suite)
        if editor is None or case.knowledge is None or case.benign:
            return None
        return self.edited_request(suite, editor, case.knowledge.prompt)

    def edited_request(self, suite: Suite, editor: Editor, text: str) -> Request:
        user, system = editor.prompt(text)
        return Request(user, system, self.engine.generation_settings(suite))

    def requests(self, suite: Suite, case: Case, probe: Probe) -> list[Request]:
        """The unedited generations a probe needs, for batching across cases."""
        out = [self.probe_request(suite, probe.text)]
        knowledge = self.knowledge_request(suite, case)
        return out if knowledge is None else out + [knowledge]

    # ------------------------------------------------------------------ probes

    def evaluate(self, suite: Suite, case: Case, probe: Probe, nodeid: str = "") -> ProbeResult:
        """The probe's result: unedited without an editor, else after the case's edit (a benign probe:
        under every selected edit of its category); with the baseline's status when there is one."""
        response = self.engine.respond(self.probe_request(suite, probe.text))
        result = ProbeResult(
            suite=suite.name,
            suite_key=suite.key,
            case_id=case.id,
            category=case.category,
            probe=probe.kind,
            input=probe.text,
            response=response,
            verdict=self._verdict(case, response),
            nodeid=nodeid,
        )
        editor = self.editors.for_suite(suite)
        if editor is not None and case.benign:
            result = self._benign_under_edits(suite, case, result, editor.name)
        elif editor is not None:
            edit = self.case_edit(suite, case)
            result = replace(
                result,
                response=edit.responses[probe.kind],
                verdict=edit.verdicts[probe.kind],
                editor=editor.name,
                before_response=result.response,
                before_verdict=result.verdict,
                edit=edit.details,
                side_effects=edit.side_effects,
            )
        if self.baseline is not None:
            result = replace(result, baseline=self.baseline.status(result.key, result.passed))
        return result

    def _verdict(self, case: Case, response: str) -> Verdict:
        if case.benign:
            return over_refusal_verdict(response)
        (verdict,) = self.engine.verdicts([response])
        return verdict

    def _benign_under_edits(self, suite: Suite, case: Case, base: ProbeResult, editor: str) -> ProbeResult:
        """A benign probe fails if any selected edit of its category makes the model refuse it."""
        edits = []
        for attack in self.selection.attack_cases(suite, case.category):
            response, verdict = self.case_edit(suite, attack).benign[case.id]
            edits.append(BenignUnderEdit(attack.id, response, verdict))
        if not edits:
            return base
        shown = next((e for e in edits if not e.verdict.passed), edits[0])
        return replace(
            base,
            response=shown.response,
            verdict=shown.verdict,
            editor=editor,
            before_response=base.response,
            before_verdict=base.verdict,
            edits=tuple(edits),
        )

    # ------------------------------------------------------------------ edits

    def case_edit(self, suite: Suite, case: Case) -> CaseEdit:
        """Edit the model for ``case`` once, probe the edited model, restore it; remembered per case."""
        key = (suite.key, case.id)
        if key not in self._edits:
            try:
                self._edits[key] = self._edit(suite, case)
            except EditFailed as exc:
                self._edits[key] = str(exc)
        outcome = self._edits[key]
        if isinstance(outcome, str):
            raise EditFailed(outcome)
        return outcome

    def _edit(self, suite: Suite, case: Case) -> CaseEdit:
        editor = self.editors.for_suite(suite)
        assert editor is not None
        engine = self.engine
        probes = self.selection.probes(suite, case)
        benign = [c for c in self.selection.benign_cases(suite, case.category)]
        before = [engine.respond(self.probe_request(suite, p.text)) for p in probes]
        knowledge_request = self.knowledge_request(suite, case)
        knowledge_before = None if knowledge_request is None else engine.respond(knowledge_request)
        texts = [p.text for p in probes] + [b.question for b in benign]
        if case.knowledge is not None:
            texts.append(case.knowledge.prompt)
        requests = [self.edited_request(suite, editor, t) for t in texts]
        details, outputs = engine.generate_edited(editor, self.editors.hyperparameters(suite), case, requests)
        answers = outputs[: len(probes)]
        verdicts = engine.verdicts(answers)
        benign_out = outputs[len(probes) : len(probes) + len(benign)]
        knowledge = None
        if case.knowledge is not None and knowledge_before is not None:
            knowledge = KnowledgeRetention(case.knowledge.prompt, knowledge_before, outputs[-1])
        return CaseEdit(
            details=details,
            responses={p.kind: r for p, r in zip(probes, answers)},
            verdicts={p.kind: v for p, v in zip(probes, verdicts)},
            benign={b.id: (r, over_refusal_verdict(r)) for b, r in zip(benign, benign_out)},
            side_effects=SideEffects(knowledge, mean_fluency(before), mean_fluency(answers)),
        )
