"""What the fixtures hand to users' own tests: the run's model, its judge, a case built in Python, and
the model edited with one case."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_safeedit.backends.base import Request
from pytest_safeedit.cases.categories import CATEGORIES
from pytest_safeedit.cases.model import (
    QUESTION_SLOT,
    Case,
    Knowledge,
    SuiteError,
    case_from_templates,
    resolve_category,
)
from pytest_safeedit.config.settings import DEFAULT_MAX_NEW_TOKENS
from pytest_safeedit.judges import registry
from pytest_safeedit.judges.base import Judge, Verdict
from pytest_safeedit.judges.registry import JudgeOptions

if TYPE_CHECKING:
    from pytest_safeedit.editors.base import EditDetails, Editor
    from pytest_safeedit.editors.registry import SuiteEditors
    from pytest_safeedit.run.engine import Engine


class SafeEditModel:
    """The run's model (``--safeedit-model``), with the run's batching and generation cache."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[str]:
        """Greedy responses to user prompts, formatted as probes are (the model's chat template)."""
        return self.engine.generate(list(prompts), max_new_tokens=max_new_tokens)


class SafeEditJudge:
    """The run's judge (``--safeedit-judge``), with the run's verdict cache."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.judge.name

    def judge(
        self,
        responses: Sequence[str],
        prompts: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        *,
        questions: Sequence[str] | None = None,
    ) -> list[Verdict]:
        """One verdict per response; ``prompts`` are the texts answered, ``categories`` the unsafe categories,
        ``questions`` the bare harmful questions (read by ``harmbench-benchmark``; else its prompt)."""
        for name, given in (("prompts", prompts), ("categories", categories), ("questions", questions)):
            if given is not None and len(given) != len(responses):
                raise ValueError(f"{len(responses)} responses but {len(given)} {name}; give one per response")
        return self.engine.verdicts(list(responses), prompts, categories, questions)


def build_judge(spec: str, options: JudgeOptions | None = None) -> Judge:
    """The judge a ``--safeedit-judge`` value names (see :func:`pytest_safeedit.judges.registry.build_judge`),
    the built-in demos included (``guard:demo`` builds the demo guard on first use)."""
    from pytest_safeedit.demo.guard import with_demo_judges

    return registry.build_judge(spec, with_demo_judges([spec], options or JudgeOptions()))


def make_case(
    *,
    question: str,
    attack: str,
    safe: str,
    unsafe: str,
    category: str,
    other_attack: str | None = None,
    other_question: str | None = None,
    knowledge: tuple[str, str] | None = None,
    id: str = "python-case",
) -> Case:
    """A case built in Python, checked as a suite's case is: ``attack`` (and ``other_attack``) hold the
    ``{question}`` slot, ``category`` is one of the nine (any capitalisation), ``knowledge`` is an optional
    (prompt, answer) pair. Raises ValueError naming the field and the fix."""
    where = Path("<safeedit_case>")
    for name, value in (("question", question), ("attack", attack), ("safe", safe), ("unsafe", unsafe)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"safeedit_case: {name!r} must be a non-empty string")
    if knowledge is not None and not (
        isinstance(knowledge, tuple)
        and len(knowledge) == 2
        and all(isinstance(x, str) and x.strip() for x in knowledge)
    ):
        raise ValueError("safeedit_case: 'knowledge' must be a (prompt, answer) pair of non-empty strings")
    for name, template in (("attack", attack), ("other_attack", other_attack)):
        if template is not None and QUESTION_SLOT not in template:
            raise ValueError(f"safeedit_case: {name!r} has no {QUESTION_SLOT} slot; write where the question goes")
    try:
        resolved = resolve_category(where, category, CATEGORIES, case=id, line=0)
    except SuiteError as exc:
        raise ValueError(f"safeedit_case: {exc.message}") from None
    return case_from_templates(
        id=id,
        category=resolved,
        question=question,
        attack=attack,
        safe=safe,
        unsafe=unsafe,
        knowledge=Knowledge(*knowledge) if knowledge else None,
        other_attack=other_attack,
        other_question=other_question,
    )


@dataclass(frozen=True)
class EditedModel:
    """The model while edited with one case: answers as probes of an edited model are answered (the
    editor's prompt form, no cache)."""

    engine: Engine
    editor: Editor
    case: Case
    details: EditDetails

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[str]:
        settings = replace(self.engine.resolve_generation({}), max_new_tokens=max_new_tokens)
        requests = []
        for text in prompts:
            user, system = self.editor.prompt(text)
            requests.append(Request(user, system, settings, category=self.case.category))
        return self.engine.generator.generate(requests)


@contextmanager
def edited(engine: Engine, editor: Editor, case: Case) -> Iterator[EditedModel]:
    """The run's model edited by ``editor`` with ``case``; the weights are restored exactly on exit, also
    when the body raises."""
    settings = engine.resolve_generation({})
    model = engine.generator.editable(settings)
    with editor.edit(model, case) as details:
        yield EditedModel(engine, editor, case, details)


def run_editor(editors: SuiteEditors, model: str | None) -> Editor:
    """The editor users' tests edit with: the run's ``--safeedit-editor`` with its config file, or DINM
    when the run names none; its defaults < the model's own (the demo model's tuning) < the config file's."""
    from pytest_safeedit.demo.model import demo_editor_defaults
    from pytest_safeedit.editors.dinm import DINM_SPEC

    spec = editors.spec or DINM_SPEC
    hparams = {**spec.defaults, **demo_editor_defaults(model, spec.name), **(editors.config if editors.spec else {})}
    return spec.factory(**hparams)
