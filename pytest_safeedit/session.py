"""The run's session object: one model and one judge per process, responses generated in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_safeedit.editing import EditDetails, Editor, EditorSpec, editor_section, validate_hparams
from pytest_safeedit.judges import ClassifierJudge, Judge, RefusalJudge, Verdict
from pytest_safeedit.options import DEFAULT_MAX_NEW_TOKENS, RunSettings
from pytest_safeedit.side_effects import KnowledgeRetention, mean_fluency, over_refusal_verdict
from pytest_safeedit.suite import Case, Suite

if TYPE_CHECKING:
    from pytest_safeedit.model import LoadedModel


class SafeEditUnavailable(Exception):
    """The model or judge could not be loaded; every probe reports this instead of retrying."""


class EditFailed(Exception):
    """The edit of a case raised; the case's probes report it, the weights are restored."""


@dataclass(frozen=True)
class CaseOutcome:
    """Everything one edit of one case gave: edited responses and verdicts, and its side effects."""

    details: EditDetails | None = None
    error: str | None = None
    responses: Mapping[str, str] = field(default_factory=dict)
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)
    #: benign case id -> (response, verdict) under this edit
    benign: Mapping[str, tuple[str, Verdict]] = field(default_factory=dict)
    knowledge: KnowledgeRetention | None = None
    fluency_before: float | None = None
    fluency_after: float | None = None


@dataclass(frozen=True)
class Request:
    """One generation: a probe text and the number of new tokens allowed."""

    text: str
    max_new_tokens: int
    system: str | None = None


class SafeEditSession:
    """Loads the model and judge on first use and answers probes, batching pending requests.

    Ordinary Python tests reach it through the ``safeedit_session`` fixture.
    """

    def __init__(
        self,
        settings: RunSettings,
        editor_spec: EditorSpec | None = None,
        editor_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.editor_spec = editor_spec
        self.editor_config = dict(editor_config or {})
        self._editors: dict[Path, Editor] = {}
        self._hparams: dict[str, dict[str, Any]] = {}
        self._outcomes: dict[tuple[Path, str], CaseOutcome] = {}
        self._case_probes: dict[tuple[Path, str], list[str]] = {}
        self._by_category: dict[tuple[Path, str], list[Case]] = {}
        #: Upcoming requests to batch with, when only the runner knows them (an xdist worker's queue).
        self.upcoming: Callable[[], Iterable[Request]] | None = None
        #: The xdist worker number (gw3 -> 3), to give each worker its own GPU.
        self.worker_index: int | None = None
        self._model: LoadedModel | None = None
        self._judge: Judge | None = None
        self._failure: str | None = None
        self._responses: dict[Request, str] = {}
        self._verdicts: dict[str, Verdict] = {}
        self._pending: list[Request] = []
        self.model_path: str | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.model is not None

    def max_new_tokens(self, suite_defaults: dict[str, Any]) -> int:
        """Options win over the suite's defaults, which win over the built-in default."""
        if self.settings.max_new_tokens is not None:
            return self.settings.max_new_tokens
        return int(suite_defaults.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            self._model = self._guarded("model", self._load_model)
        return self._model

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = self._guarded("judge", self._load_judge)
        return self._judge

    def _guarded(self, what: str, load: Any) -> Any:
        if self._failure is not None:
            raise SafeEditUnavailable(self._failure)
        try:
            return load()
        except Exception as exc:  # noqa: BLE001 - any load failure is reported on every probe
            self._failure = f"could not load the {what}: {type(exc).__name__}: {exc}"
            raise SafeEditUnavailable(self._failure) from exc

    def _load_model(self) -> LoadedModel:
        from pytest_safeedit.model import ModelSettings, load_model

        name = self.settings.model
        assert name is not None
        if name == "demo":
            from pytest_safeedit.demo import ensure_demo

            path = str(ensure_demo(self.settings.cache_dir))
        else:
            path = name
        self.model_path = path
        s = self.settings
        device = s.device
        if device == "auto" and not s.device_map and self.worker_index is not None:
            import torch

            count = torch.cuda.device_count()
            if count > 1:
                device = f"cuda:{self.worker_index % count}"
        return load_model(
            ModelSettings(
                name_or_path=path,
                dtype=s.dtype,
                device=device,
                device_map=s.device_map,
                trust_remote_code=s.trust_remote_code,
                chat_template=s.chat_template,
                max_input_tokens=s.max_input_tokens,
                batch_size=s.batch_size,
                seed=s.seed,
            )
        )

    def _load_judge(self) -> Judge:
        spec = self.settings.judge
        if spec == "refusal":
            return RefusalJudge()
        from pytest_safeedit.model import resolve_device

        return ClassifierJudge(
            spec.split(":", 1)[1],
            unsafe_labels=self.settings.judge_unsafe_labels,
            max_length=self.settings.judge_max_length,
            device=resolve_device(self.settings.device),
            trust_remote_code=self.settings.trust_remote_code,
        )

    # ------------------------------------------------------------------ editing

    def editor_for(self, suite: Suite) -> Editor | None:
        """The editor with its hyperparameters for a suite: defaults < the suite's < the config file's."""
        spec = self.editor_spec
        if spec is None:
            return None
        if suite.path not in self._editors:
            hparams = dict(spec.defaults)
            source = f"{suite.path}: defaults.editor"
            hparams.update(
                validate_hparams(spec, editor_section(suite.defaults.get("editor"), spec.name, source), source)
            )
            hparams.update(self.editor_config)
            self._hparams[suite.name] = hparams
            self._editors[suite.path] = spec.factory(**hparams)
        return self._editors[suite.path]

    def editor_hyperparameters(self) -> dict[str, dict[str, Any]]:
        """The editor's hyperparameters in force, by suite name."""
        return dict(self._hparams)

    def register(self, suite: Suite, case: Case, probe: str) -> None:
        """Note a collected probe, so that an edit generates all of its case's probes at once."""
        key = (suite.path, case.id)
        kinds = self._case_probes.setdefault(key, [])
        if not kinds:
            self._by_category.setdefault((suite.path, case.category), []).append(case)
        if probe not in kinds:
            kinds.append(probe)

    def attack_cases(self, suite: Suite, category: str) -> list[Case]:
        return [c for c in self._by_category.get((suite.path, category), []) if not c.benign]

    def probe_request(self, suite: Suite, text: str) -> Request:
        """The unedited generation of a probe."""
        return Request(text, self.max_new_tokens(dict(suite.defaults)))

    def knowledge_request(self, suite: Suite, case: Case) -> Request | None:
        """With an editor, the unedited answer to the knowledge prompt, prompted as the edited model is."""
        editor = self.editor_for(suite)
        if editor is None or case.knowledge is None or case.benign:
            return None
        text, system = editor.prompt(case.knowledge.prompt)
        return Request(text, self.max_new_tokens(dict(suite.defaults)), system)

    def case_outcome(self, suite: Suite, case: Case) -> CaseOutcome:
        """Edit the model for ``case`` once, probe the edited model, restore it; cached per case."""
        key = (suite.path, case.id)
        if key not in self._outcomes:
            self._outcomes[key] = self._edit_and_probe(suite, case)
        outcome = self._outcomes[key]
        if outcome.error is not None:
            raise EditFailed(outcome.error)
        return outcome

    def _edit_and_probe(self, suite: Suite, case: Case) -> CaseOutcome:
        editor = self.editor_for(suite)
        assert editor is not None
        model = self.model
        mnt = self.max_new_tokens(dict(suite.defaults))
        kinds = self._case_probes.get((suite.path, case.id)) or [p.kind for p in case.probes]
        probes = [case.probe(k) for k in kinds]
        benign = [c for c in self._by_category.get((suite.path, case.category), []) if c.benign]
        texts = [p.text for p in probes] + [b.question for b in benign]
        if case.knowledge is not None:
            texts.append(case.knowledge.prompt)
        before = [self.respond(self.probe_request(suite, p.text)) for p in probes]
        knowledge_request = self.knowledge_request(suite, case)
        knowledge_before = None if knowledge_request is None else self.respond(knowledge_request)
        prompts = [model.format_prompt(*editor.prompt(t), max_new_tokens=mnt) for t in texts]
        try:
            with editor.edit(model, case) as details:
                outputs = model.generate(prompts, max_new_tokens=mnt)
        except Exception as exc:  # noqa: BLE001 - reported on the case's items; other cases go on
            return CaseOutcome(error=f"the {editor.name} edit of case {case.id!r} failed: {type(exc).__name__}: {exc}")
        answers = outputs[: len(probes)]
        verdicts = self.verdicts(answers)
        benign_out = outputs[len(probes) : len(probes) + len(benign)]
        knowledge = None
        if case.knowledge is not None and knowledge_before is not None:
            knowledge = KnowledgeRetention(case.knowledge.prompt, knowledge_before, outputs[-1])
        return CaseOutcome(
            details=details,
            responses={p.kind: r for p, r in zip(probes, answers)},
            verdicts={p.kind: v for p, v in zip(probes, verdicts)},
            benign={b.id: (r, over_refusal_verdict(r)) for b, r in zip(benign, benign_out)},
            knowledge=knowledge,
            fluency_before=mean_fluency(before),
            fluency_after=mean_fluency(answers),
        )

    # ------------------------------------------------------------------ generation

    def expect(self, requests: Sequence[Request]) -> None:
        """Announce the requests the run will make, in order, so that they can be batched."""
        self._pending.extend(r for r in requests if r not in self._responses)

    def respond(self, request: Request) -> str:
        """The response to one request, generating it with the next pending ones of the same shape."""
        if request not in self._responses:
            model = self.model
            size = model.default_batch_size()
            batch = [request]
            for other in self._pending if self.upcoming is None else self.upcoming():
                if len(batch) >= size:
                    break
                if (
                    other.max_new_tokens == request.max_new_tokens
                    and other not in self._responses
                    and other not in batch
                ):
                    batch.append(other)
            self._generate(batch)
        return self._responses[request]

    def generate(self, texts: Sequence[str], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[str]:
        """Greedy responses to raw user texts (formatted like probes), batched; for Python tests."""
        requests = [Request(t, max_new_tokens) for t in texts]
        missing = list(dict.fromkeys(r for r in requests if r not in self._responses))
        size = self.model.default_batch_size()
        for start in range(0, len(missing), size):
            self._generate(missing[start : start + size])
        return [self._responses[r] for r in requests]

    def _generate(self, batch: Sequence[Request]) -> None:
        model = self.model
        prompts = [model.format_prompt(r.text, r.system, max_new_tokens=r.max_new_tokens) for r in batch]
        outputs = model.generate(prompts, max_new_tokens=batch[0].max_new_tokens, batch_size=len(batch))
        for request, output in zip(batch, outputs):
            self._responses[request] = output
        self._pending = [r for r in self._pending if r not in self._responses]
        self.verdicts(outputs)

    def verdicts(self, responses: Sequence[str]) -> list[Verdict]:
        """The judge's verdicts on responses (each distinct response is judged once)."""
        todo = list(dict.fromkeys(r for r in responses if r not in self._verdicts))
        if todo:
            for response, verdict in zip(todo, self.judge.judge(todo)):
                self._verdicts[response] = verdict
        return [self._verdicts[r] for r in responses]

    def metadata(self) -> dict[str, Any]:
        """Plain data describing the loaded model, for reports."""
        out: dict[str, Any] = {"model": self.settings.model, "model_path": self.model_path}
        if self._model is not None:
            m = self._model.model
            out.update(
                model_class=type(m).__name__,
                parameters=sum(p.numel() for p in m.parameters()),
                dtype=str(next(m.parameters()).dtype).removeprefix("torch."),
                device=str(self._model.device),
                chat_template=self._model.use_chat_template,
            )
        return out
