"""The run's engine: responses from the generator through the cache, batched; verdicts from the judge;
edited generations, once per case.

One engine per process. It knows nothing of pytest items: the evaluator asks it for responses and
verdicts, and the plugin tells it which requests are coming so that it can batch them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from functools import lru_cache
from importlib import metadata as importlib_metadata
from typing import Any, TypeVar, cast

from pytest_safeedit.backends.base import GenerationError, Generator, Request
from pytest_safeedit.backends.registry import BUILTIN_BACKENDS, BackendContext, BackendSpec, choose_backend
from pytest_safeedit.cases.model import Case, Suite
from pytest_safeedit.config.settings import (
    DEFAULT_MAX_NEW_TOKENS,
    GenerationSettings,
    ModelSettings,
    RunSettings,
    default_batch_size,
    resolve_device,
    resolve_generation,
    resolve_model_settings,
)
from pytest_safeedit.editors.base import EditDetails, Editor
from pytest_safeedit.judges.base import Judge, Verdict, ask, reads_question
from pytest_safeedit.judges.registry import JudgeOptions, build_judges, judges_identity, specs_read_question
from pytest_safeedit.results.probes import ReferenceCheck
from pytest_safeedit.util.cache import GenerationCache, cache_root, digest

T = TypeVar("T")
#: Batches are filled from this many batches' worth of upcoming requests, by length.
BUCKET_WINDOW = 4


class ModelUnavailable(Exception):
    """The model or judge could not be loaded; every probe reports this instead of retrying.

    ``repeated`` is False the first time the failure is raised in this process (that probe shows the
    whole message) and True afterwards (the others say so in one line).
    """

    def __init__(self, message: str, *, repeated: bool = False) -> None:
        super().__init__(message)
        self.repeated = repeated


def describe_load_error(exc: BaseException) -> str:
    """A load failure in words: our own checks as they are, others with their type, without the
    hub-related advice transformers adds for what is a local problem."""
    from pytest_safeedit.backends.openai import EndpointError
    from pytest_safeedit.config.model_source import ModelSourceError

    if isinstance(exc, (ModelSourceError, EndpointError)):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"


class ProbeUnanswered(Exception):
    """The generator could not answer a request (a server failed it for good); the probe reports why,
    the other probes go on, and a re-run generates only what is missing."""


class EditFailed(Exception):
    """The edit of a case raised; the case's probes report it, the weights are restored."""


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of the libraries that compute responses (part of every cache key)."""
    out = {}
    for name in ("torch", "transformers", "tokenizers"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def sample_part(request: Request) -> tuple[int, ...]:
    """What a request adds to its cache key beyond its text: the sample index, with sampled decoding
    (greedy keys stay as they were)."""
    return (request.sample,) if request.settings.sampled else ()


def resolve_model_path(model: str, cache_dir: str | None) -> str:
    """The model's folder or hub id (``demo`` builds the demo model first)."""
    if model == "demo":
        from pytest_safeedit.demo.model import ensure_demo

        return str(ensure_demo(cache_dir))
    return model


class Engine:
    """Loads the generator and judge on first use and answers requests, batching pending ones.

    Args:
        settings: the run's options.
        generator: the model to answer from; by default the one ``make_generator`` returns for the
            resolved model settings, else a Hugging Face model in this process, built on first use.
        make_generator: a factory of generators (the plugin asks the ``pytest_safeedit_generator``
            hook); None or a None result means the Hugging Face backend.
        judge: the judge of responses; by default the one ``settings`` names.
        worker_index, worker_count: the xdist worker this process is, to pick its GPU or CPU share.
    """

    def __init__(
        self,
        settings: RunSettings,
        *,
        generator: Generator | None = None,
        make_generator: Callable[[ModelSettings], Generator | None] | None = None,
        judge: Judge | None = None,
        worker_index: int | None = None,
        worker_count: int | None = None,
        backend: BackendSpec | None = None,
    ) -> None:
        self.settings = settings
        #: The backend that answers requests (the plugin gives the one the registry chose, plugins' included).
        self.backend = backend or choose_backend(settings.backend, BUILTIN_BACKENDS)
        self.worker_index = worker_index
        self.worker_count = worker_count
        root = None if settings.no_cache else cache_root(settings.cache_dir) / "generations"
        self.cache = GenerationCache(root)
        #: Upcoming requests to batch with, when only the runner knows them (an xdist worker's queue).
        self.upcoming: Callable[[], Iterable[Request]] | None = None
        #: Responses generated by the model (not taken from the cache) and edits run, in this process.
        self.generated = 0
        self.edits_run = 0
        self._generator = generator
        self._make_generator = make_generator
        self._judge = judge
        self._given_judge = judge
        self._judge_identity: str | None = None
        self._local_judge_options_memo: JudgeOptions | None = None
        self._reads_question: bool | None = None
        #: Verdicts read from the cache, and responses the judge judged, in this process.
        self.verdict_hits = 0
        self.judged = 0
        self._failure: str | None = None
        self._generated_once = False
        self._device: str | None = None
        self._model_settings: ModelSettings | None = None
        self._identity: str | None = None
        self._generation: dict[str, GenerationSettings] = {}
        self._responses: dict[Request, str] = {}
        self._verdicts: dict[tuple[str, str, str, str], Verdict] = {}
        self._pending: list[Request] = []
        #: What the generator's metadata said when :meth:`release_model` dropped it (for reports).
        self._released: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.model is not None or self._generator is not None

    # ------------------------------------------------------------------ settings

    @property
    def device(self) -> str:
        """The device the model runs on, "auto" resolved (imports torch, loads nothing)."""
        if self._device is None:
            if self._model_settings is not None:
                self._device = self._model_settings.device
            elif not self.backend.loads_model:  # only judges run here (or the backend places itself)
                self._device = resolve_device(self.settings.device, self.worker_index)
            elif self._generator is not None and self.settings.model is None:
                self._device = "cpu" if self.settings.device == "auto" else self.settings.device
            else:
                self._device = resolve_device(self.settings.device, self.worker_index, self.settings.device_map)
        return self._device

    def generation_settings(self, suite: Suite) -> GenerationSettings:
        """The suite's generation settings, resolved once: option > ini > suite default > built-in."""
        if suite.key not in self._generation:
            self._generation[suite.key] = self.resolve_generation(suite.defaults)
        return self._generation[suite.key]

    def resolve_generation(self, suite_defaults: Mapping[str, Any]) -> GenerationSettings:
        """Generation settings from the run's options and ``suite_defaults``, with the backend's batch size."""
        device = self.device
        return resolve_generation(
            self.settings, suite_defaults, device, self.backend.default_batch_size(self.settings, device)
        )

    def generation_metadata(self) -> dict[str, dict[str, Any]]:
        """The generation settings in force, by suite key, with the run's chat-template mode."""
        return {
            key: {**gen.to_dict(), "chat_template": self.settings.chat_template}
            for key, gen in sorted(self._generation.items())
        }

    @property
    def model_settings(self) -> ModelSettings:
        """How the model loads, resolved (builds the demo model on first use)."""
        if self._model_settings is None:
            assert self.settings.model is not None
            path = self._guarded("model", lambda: self._model_path(str(self.settings.model)))
            self._model_settings = self._guarded(
                "model", lambda: resolve_model_settings(self.settings, path, self.worker_index)
            )
        return self._model_settings

    def _model_path(self, name: str) -> str:
        from pytest_safeedit.config.model_source import check_model_source

        check_model_source(name)
        return resolve_model_path(name, self.settings.cache_dir)

    # ------------------------------------------------------------------ what the engine loads

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = self._guarded("model", self._build_generator)
        return self._generator

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = self._guarded("judge", self._build_judge)
        return self._judge

    @property
    def failure(self) -> str | None:
        """Why the model or judge could not be loaded in this process (None while all is well)."""
        return self._failure

    def _guarded(self, what: str, load: Callable[[], T]) -> T:
        if self._failure is not None:
            raise ModelUnavailable(self._failure, repeated=True)
        try:
            return load()
        except (ModelUnavailable, GenerationError):
            raise  # a server that failed some requests is not a model that could not load
        except Exception as exc:  # noqa: BLE001 - any load failure is reported on every probe
            self._failure = f"could not load the {what}: {describe_load_error(exc)}"
            raise ModelUnavailable(self._failure) from exc

    def _build_generator(self) -> Generator:
        """The backend's generator; for a backend that loads the model here, a plugin's
        ``pytest_safeedit_generator`` hook is asked first."""
        if self.backend.loads_model and self._make_generator is not None:
            custom = self._make_generator(self.model_settings)
            if custom is not None:
                return custom
        root = cache_root(self.settings.cache_dir)
        context = BackendContext(
            run=self.settings,
            model=lambda: self.model_settings,
            cache_root=root,
            file_hashes=None if self.cache.root is None else self.cache.root / "file-hashes.json",
            worker_count=self.worker_count or 0,
        )
        generator = self.backend.build(context)
        if self.backend.editable and self.settings.model is not None:
            from pytest_safeedit.editors.routed import routed_checkpoint

            # A repaired checkpoint of the routed editor answers through its router (see run/repair.py).
            generator = routed_checkpoint(generator, self.model_settings.name_or_path)
        return generator

    def for_model(self, model: str) -> Engine:
        """An engine for another model with this run's settings (no editor), sharing this engine's judge
        once it is loaded (and its verdict cache either way)."""
        engine = Engine(
            replace(self.settings, model=model, editor="none"),
            worker_index=self.worker_index,
            worker_count=self.worker_count,
            backend=self.backend,
        )
        engine._judge = self._judge
        engine._reads_question = self._reads_question
        return engine

    def release_model(self) -> None:
        """Drop this engine's generator (and the model it holds); it is built again on next use."""
        import gc

        if self._generator is not None:
            self._released = {**self._generator.metadata(), "model": self.settings.model}
        self._generator = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def judge_options(self) -> JudgeOptions:
        """How the run's model judges load and read, resolved (device, batch size)."""
        run = self.settings
        return JudgeOptions(
            unsafe_labels=run.judge_unsafe_labels,
            max_length=run.judge_max_length,
            with_prompt=run.judge_with_prompt,
            guard_format=run.judge_format,
            rubric=run.judge_rubric,
            device=self.device,
            dtype=run.dtype,
            batch_size=run.batch_size or default_batch_size(self.device),
            trust_remote_code=run.trust_remote_code,
            cache_dir=run.cache_dir,
            gguf_cache=run.gguf_cache,
        )

    def _local_judge_options(self) -> JudgeOptions:
        """:meth:`judge_options` with the demo judges' folders (built on first use)."""
        if self._local_judge_options_memo is None:
            from pytest_safeedit.demo.guard import with_demo_judges

            self._local_judge_options_memo = with_demo_judges(self.settings.judge, self.judge_options())
        return self._local_judge_options_memo

    def _build_judge(self) -> Judge:
        return build_judges(self.settings.judge, self.settings.judge_policy, self._local_judge_options())

    # ------------------------------------------------------------------ the generation cache

    def _key(self, kind: str, settings: GenerationSettings, *parts: Any) -> str:
        """Cache key: the generator's identity (model content, resolved dtype, device and chat-template
        mode), the library versions, the settings that change a response, and what is generated.

        The raw texts go into the key, not the formatted prompts: the tokenizer and its chat template are
        files of the model (in the identity). So a fully cached run needs neither tokenizer nor weights.
        """
        if self._identity is None:
            identity = self._guarded("model", lambda: self.generator.identity())
            if identity is None:
                self.cache.turn_off(
                    "the generator cannot name what answers (a served model without --safeedit-model-revision), "
                    "so responses are neither read from nor written to the cache"
                )
            self._identity = identity or ""
        return digest(kind, self._identity, library_versions(), settings.cache_part(), *parts)

    # ------------------------------------------------------------------ generation

    def expect(self, requests: Sequence[Request]) -> None:
        """Announce the requests the run will make, in order, so that they can be batched."""
        self._pending.extend(r for r in requests if r not in self._responses)

    def respond(self, request: Request) -> str:
        """The response to one request, generating it with the next pending ones of the same settings."""
        if request not in self._responses:
            batch = self._batch_for(request)
            try:
                self._generate(batch)
            except GenerationError as exc:
                if request not in self._responses:
                    raise ProbeUnanswered(f"no response: {exc}") from None
        return self._responses[request]

    def _batch_for(self, request: Request) -> list[Request]:
        """``request`` and the pending requests of its settings closest to it in length, from the next
        ``BUCKET_WINDOW`` batches' worth: batches of similar lengths carry less padding (greedy outputs do
        not depend on what they are batched with; tested)."""
        size = request.settings.batch_size
        window: list[Request] = []
        for other in self._pending if self.upcoming is None else self.upcoming():
            if len(window) >= size * BUCKET_WINDOW:
                break
            if other.settings == request.settings and other != request and other not in self._responses:
                window.append(other)
        window = list(dict.fromkeys(window))
        window.sort(key=lambda other: abs(len(other.text) - len(request.text)))
        return [request, *window[: size - 1]]

    def generate(self, texts: Sequence[str], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[str]:
        """Greedy responses to raw user texts (formatted like probes), batched; for Python tests."""
        run = replace(self.resolve_generation({}), max_new_tokens=max_new_tokens)
        requests = [Request(t, None, run) for t in texts]
        missing = list(dict.fromkeys(r for r in requests if r not in self._responses))
        for start in range(0, len(missing), run.batch_size):
            try:
                self._generate(missing[start : start + run.batch_size])
            except GenerationError as exc:
                raise ProbeUnanswered(f"no response: {exc}") from None
        return [self._responses[r] for r in requests]

    def _generate(self, batch: Sequence[Request]) -> None:
        todo = []
        for request in batch:
            key = self._key("generate", request.settings, request.text, request.system, *sample_part(request))
            cached = self.cache.get(key, "response")
            if cached is not None and isinstance(cached["response"], str):
                self._responses[request] = cached["response"]
            else:
                todo.append((request, key))
        failure: GenerationError | None = None
        if todo:
            try:
                outputs: Sequence[str | None] = self._first_generation([r for r, _ in todo])
            except GenerationError as exc:
                # A server failed part of the batch: keep (and cache) what came back, report the rest.
                outputs, failure = exc.partial, exc
            for (request, key), output in zip(todo, outputs):
                if output is None:
                    continue
                self.generated += 1
                self._responses[request] = output
                self.cache.put(key, {"response": output})
        self._pending = [r for r in self._pending if r not in self._responses]
        done = [r for r in batch if r in self._responses]
        self.verdicts(
            [self._responses[r] for r in done],
            [r.text for r in done],
            [r.category for r in done],
            [r.question for r in done],
        )
        if failure is not None:
            raise failure

    def _first_generation(self, requests: Sequence[Request]) -> list[str]:
        """Generate; until one generation has worked, a failure counts as a load failure (the weights of
        the Hugging Face backend load on the first forward pass), said once and not retried."""
        if self._generated_once:
            return self.generator.generate(requests)
        outputs = self._guarded("model", lambda: self.generator.generate(requests))
        self._generated_once = True
        return outputs

    def generate_edited(
        self, editor: Editor, hyperparameters: Mapping[str, Any], case: Case, requests: Sequence[Request]
    ) -> tuple[EditDetails, list[str]]:
        """Edit the model for ``case``, answer ``requests`` with the edited model, restore it.

        Cached like unedited responses, keyed also by the editor, its hyperparameters and every field of
        the case. Raises :class:`EditFailed` when the edit raises (the weights are restored).
        """
        (outcome,) = self.generate_edited_group(editor, hyperparameters, [(case, requests)])
        if isinstance(outcome, EditFailed):
            raise outcome
        return outcome

    def generate_edited_group(
        self,
        editor: Editor,
        hyperparameters: Mapping[str, Any],
        items: Sequence[tuple[Case, Sequence[Request]]],
    ) -> list[tuple[EditDetails, list[str]] | EditFailed]:
        """:meth:`generate_edited` for several cases, in order; a failed edit gives its :class:`EditFailed`.

        With an editor that changes one weight per case (``single_weight``) and greedy decoding on the
        in-process model, the edits run one after another and their requests are then generated together,
        each row with its own case's edited weight (:mod:`pytest_safeedit.backends.rows`); otherwise each case
        is edited and answered in turn.
        """
        results: list[tuple[EditDetails, list[str]] | EditFailed | None] = [None] * len(items)
        keys = []
        for index, (case, requests) in enumerate(items):
            if not requests:
                raise ValueError("an edit needs at least one request to answer")
            settings = requests[0].settings
            inputs = [(r.text, r.system, *sample_part(r)) for r in requests]
            keys.append(self._key("edit", settings, editor.name, dict(hyperparameters), asdict(case), inputs))
            cached = self.cache.get(keys[-1], "details", "outputs")
            if cached is not None:
                try:
                    outputs = [str(o) for o in cached["outputs"]]
                    if len(outputs) == len(requests):
                        results[index] = (EditDetails.from_dict(cached["details"]), outputs)
                except (TypeError, ValueError):
                    pass
        todo = [i for i, r in enumerate(results) if r is None]
        generator = self.generator if todo else None
        together = (
            len(todo) > 1
            and getattr(editor, "single_weight", False)
            and not items[todo[0]][1][0].settings.sampled
            and getattr(generator, "answers_row_weights", False)
        )
        if together:
            for index, outcome in zip(todo, self._edit_together(editor, [items[i] for i in todo])):
                results[index] = outcome
        else:
            for index in todo:
                results[index] = self._edit_alone(editor, *items[index])
        for index in todo:
            done = results[index]
            if done is not None and not isinstance(done, EditFailed):
                self.edits_run += 1
                self.generated += len(items[index][1])
                self.cache.put(keys[index], {"details": done[0].to_dict(), "outputs": done[1]})
        return [r for r in results if r is not None]

    def _edit_alone(
        self, editor: Editor, case: Case, requests: Sequence[Request]
    ) -> tuple[EditDetails, list[str]] | EditFailed:
        """Edit for ``case``, answer its requests inside the edit, restore."""
        try:
            model = self.generator.editable(requests[0].settings)
            with editor.edit(model, case) as details:
                outputs = self.generator.generate(requests)
        except ModelUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on the case's items; other cases go on
            return EditFailed(f"the {editor.name} edit of case {case.id!r} failed: {type(exc).__name__}: {exc}")
        return details, outputs

    def _edit_together(
        self, editor: Editor, items: Sequence[tuple[Case, Sequence[Request]]]
    ) -> list[tuple[EditDetails, list[str]] | EditFailed]:
        """Each case's edit in turn, keeping a copy of its edited weight; then all their requests in
        batches, every row with its own case's weight (where the edited module's rows cannot be told apart,
        said in a warning, each case is edited and answered alone)."""
        import warnings

        from pytest_safeedit.backends.rows import RowLayoutError, row_weights

        settings = items[0][1][0].settings
        model = self.generator.editable(settings)
        edited: dict[int, tuple[EditDetails, tuple[str, Any]]] = {}
        out: list[tuple[EditDetails, list[str]] | EditFailed] = []
        for index, (case, _) in enumerate(items):
            try:
                with editor.edit(model, case) as details:
                    if details.module is None:
                        raise RuntimeError(f"{editor.name} names no edited module")
                    weight = dict(model.model.named_parameters())[details.module + ".weight"].detach().clone()
                edited[index] = (details, (details.module, weight))
                out.append((details, []))
            except ModelUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - reported on the case's items; other cases go on
                out.append(
                    EditFailed(f"the {editor.name} edit of case {case.id!r} failed: {type(exc).__name__}: {exc}")
                )
        rows = [(index, request) for index in edited for request in items[index][1]]
        answers: dict[int, list[str]] = {index: [] for index in edited}
        for start in range(0, len(rows), settings.batch_size):
            chunk = rows[start : start + settings.batch_size]
            try:
                with row_weights(model.model, [edited[index][1] for index, _ in chunk]) as weights:
                    generator = cast(Any, self.generator)  # it answers_row_weights (checked by the caller)
                    outputs = generator.generate([request for _, request in chunk], row_weights=weights)
            except RowLayoutError as exc:
                warnings.warn(f"{editor.name}: {exc}", stacklevel=2)
                return [
                    o if isinstance(o, EditFailed) else self._edit_alone(editor, *items[i]) for i, o in enumerate(out)
                ]
            except ModelUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - out of memory, say: fails the cases of these rows only
                for index in dict.fromkeys(index for index, _ in chunk):
                    case = items[index][0]
                    out[index] = EditFailed(
                        f"the {editor.name} edit of case {case.id!r} was made, but answering with the edited model "
                        f"failed: {type(exc).__name__}: {exc}"
                    )
                continue
            for (index, _), output in zip(chunk, outputs):
                answers[index].append(output)
        return [o if isinstance(o, EditFailed) else (o[0], answers[i]) for i, o in enumerate(out)]

    # ------------------------------------------------------------------ judging

    def verdicts(
        self,
        responses: Sequence[str],
        prompts: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        questions: Sequence[str] | None = None,
    ) -> list[Verdict]:
        """The judge's verdicts on responses to prompts of cases of categories, asking bare questions (any
        absent: judged without them); each distinct (prompt, response, category, question) is judged once,
        and read from the verdict cache where an earlier run judged it. Questions reach only a judge that
        ``reads_question`` (HarmBench's protocol), and only then are they part of the key."""
        blank = [""] * len(responses)
        reads = self._judge_reads_question()
        pairs = list(
            zip(
                blank if prompts is None else prompts,
                responses,
                blank if categories is None else categories,
                blank if questions is None or not reads else questions,
                strict=True,
            )
        )
        todo = list(dict.fromkeys(p for p in pairs if p not in self._verdicts))
        identity = self._judge_key() if todo else None
        keys = {}
        if identity is not None:
            for pair in todo:
                # The question is part of a key only where the judge reads it (keys of other judges unchanged).
                keys[pair] = digest("verdict", identity, *(pair if pair[3] else pair[:3]))
                cached = self.cache.get(keys[pair], "verdict", count=False)
                if cached is not None:
                    try:
                        self._verdicts[pair] = Verdict.from_dict(cached["verdict"])
                        self.verdict_hits += 1
                    except (KeyError, TypeError, ValueError):
                        pass
            todo = [p for p in todo if p not in self._verdicts]
        if todo:
            texts, asked, kinds = [r for _, r, _, _ in todo], [p for p, _, _, _ in todo], [c for _, _, c, _ in todo]
            questions = [q or p for p, _, _, q in todo] if reads else None
            verdicts = ask(self.judge, texts, asked, kinds, questions)
            self.judged += len(todo)
            for pair, verdict in zip(todo, verdicts):
                self._verdicts[pair] = verdict
                if pair in keys:
                    self.cache.put(keys[pair], {"verdict": verdict.to_dict()})
        return [self._verdicts[p] for p in pairs]

    def _judge_reads_question(self) -> bool:
        """Whether the run's judge reads bare questions: from the judge when it is given or built, else
        from its specs (detecting a guard's format loads nothing); decided once."""
        if self._reads_question is None:
            if self._given_judge is not None or self._judge is not None:
                self._reads_question = reads_question(self.judge)
            elif self.settings.cheap_judge:
                self._reads_question = False
            else:
                options = self._guarded("judge", self._local_judge_options)
                self._reads_question = specs_read_question(self.settings.judge, options)
        return self._reads_question

    def _judge_key(self) -> str | None:
        """The judge's identity for the verdict cache: from the settings, so that a fully cached run never
        loads the judge; None (no verdict cache) for the offline judges, which are quicker than a cache
        read, for a judge given directly (a test's), and for one that cannot be named."""
        if self._judge_identity is None:
            identity = None
            if self._given_judge is None and self.cache.enabled and not self.settings.cheap_judge:
                run = self.settings
                memo = None if self.cache.root is None else self.cache.root / "file-hashes.json"
                identity = self._guarded(
                    "judge", lambda: judges_identity(run.judge, run.judge_policy, self._local_judge_options(), memo)
                )
            self._judge_identity = identity or ""
        return self._judge_identity or None

    def reference_check(self, case: Case) -> ReferenceCheck:
        """The judge on the case's own references, read as answers to its attack prompt."""
        safe, unsafe = self.verdicts(
            [case.safe, case.unsafe], [case.adversarial_prompt] * 2, [case.category] * 2, [case.question] * 2
        )
        return ReferenceCheck(safe.label, unsafe.label)

    # ------------------------------------------------------------------ reports

    def metadata(self) -> dict[str, Any]:
        """Plain data describing the model and the cache, for reports."""
        out: dict[str, Any] = {
            "model": self.settings.model,
            "model_path": None if self._model_settings is None else self._model_settings.name_or_path,
            "model_identity": self._identity or None,
            "load_failure": self._failure,
            "cache": {
                "dir": None if self.cache.root is None else str(self.cache.root),
                "hits": self.cache.hits,
                "misses": self.cache.misses,
                "generated": self.generated,
                "edits_run": self.edits_run,
                "verdict_hits": self.verdict_hits,
                "judged": self.judged,
                "failure": self.cache.failure,
                "off_reason": self.cache.off_reason,
            },
        }
        if self._generator is not None:
            out.update(self._generator.metadata())
            out["model"] = self.settings.model
        elif self._released is not None:
            out.update(self._released)
        return out
