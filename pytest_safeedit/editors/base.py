"""Editors: the Editor protocol, editor specs, hyperparameter validation and exact weight restore."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from pytest_safeedit.backends.hf import LoadedModel
    from pytest_safeedit.cases.model import Case, Suite

NONE = "none"


@dataclass
class EditDetails:
    """What an edit did; filled in while the edit runs, then read by reports."""

    editor: str
    case_id: str
    layer: int | None = None
    module: str | None = None
    steps: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    layer_distances: list[float] = field(default_factory=list)
    #: A routing editor's probe (block, held-out accuracy, share of harmless inputs routed) and how many of
    #: this case's inputs went through the edit (``edited_inputs``) or kept the original weights.
    routing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EditDetails:
        return cls(**dict(data))


class EditorConfigError(Exception):
    """Editor hyperparameters that cannot be used, with where they came from and how to fix them."""


class Editor(Protocol):
    """Changes a model for one case, and says how the edited model is to be prompted.

    An editor whose edit changes exactly one weight matrix, that of the module its details name, may set
    the class attribute ``single_weight = True``: the engine then answers several cases' edits in one
    batch (:meth:`pytest_safeedit.run.engine.Engine.generate_edited_group`).
    """

    @property
    def name(self) -> str:
        """How reports name this editor, e.g. ``dinm``."""
        ...

    def prompt(self, text: str) -> tuple[str, str | None]:
        """The user text and the system prompt (or None) that a probe is sent with after the edit."""
        ...

    def edit(self, model: LoadedModel, case: Case) -> AbstractContextManager[EditDetails]:
        """Edit ``model`` for ``case``; on exit every weight is restored exactly, also after an error."""
        ...


@runtime_checkable
class InputRouter(Protocol):
    """An editor's optional capability: its edit answers only the inputs it flags; the others are answered
    by the unedited model with the unedited prompt (the evaluator routes them, see ``run/evaluator.py``)."""

    def fit(self, model: LoadedModel, attack: Sequence[str], harmless: Sequence[str]) -> dict[str, Any]:
        """Learn to flag ``attack`` inputs and not ``harmless`` ones (once; later calls return the first
        fit's report, e.g. its held-out accuracy); a ValueError says why it cannot."""
        ...

    def flags(self, model: LoadedModel, texts: Sequence[str]) -> list[bool]:
        """Whether each input goes through the edit (after :meth:`fit`)."""
        ...


def routing_inputs(suites: Sequence[Suite], exclude: Set[tuple[str, str]] = frozenset()) -> tuple[list[str], list[str]]:
    """What a routing editor learns from: the suites' attack inputs (every attack probe's text) and their
    harmless inputs (benign questions, knowledge prompts), leaving out the cases ``exclude`` names (suite
    key, case id)."""
    cases = [c for suite in suites for c in suite.cases if (suite.key, c.id) not in exclude]
    attack = [p.text for c in cases if not c.benign for p in c.probes]
    harmless = [c.question for c in cases if c.benign]
    harmless += [c.knowledge.prompt for c in cases if c.knowledge is not None and not c.benign]
    return attack, harmless


@dataclass(frozen=True)
class EditorSpec:
    """A named editor: its factory and the hyperparameters it takes, with their defaults.

    The factory is called with the validated hyperparameters as keyword arguments.
    """

    name: str
    factory: Callable[..., Editor]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(type(value), "a value")


def validate_hparams(spec: EditorSpec, raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check hyperparameters against the spec's defaults: known keys, matching types, sane values."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in spec.defaults:
            known = ", ".join(sorted(spec.defaults)) or "none"
            raise EditorConfigError(
                f"{source}: editor {spec.name!r} has no hyperparameter {key!r}; its hyperparameters are {known}"
            )
        default = spec.defaults[key]
        if value is None or default is None:
            out[key] = value if value is None else _coerce_optional(spec, key, value, source)
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise EditorConfigError(
                f"{source}: editor {spec.name!r}, hyperparameter {key!r}: expected {_type_name(default)}, got {value!r}"
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise EditorConfigError(
                f"{source}: editor {spec.name!r}, hyperparameter {key!r}: {value!r} is negative; give 0 or more"
            )
        out[key] = value
    return out


def _coerce_optional(spec: EditorSpec, key: str, value: Any, source: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EditorConfigError(f"{source}: editor {spec.name!r}, hyperparameter {key!r}: unexpected value {value!r}")
    if isinstance(value, (int, float)) and value < 0:
        raise EditorConfigError(
            f"{source}: editor {spec.name!r}, hyperparameter {key!r}: {value!r} is negative; give 0 or more"
        )
    return value


def editor_section(data: Any, name: str, source: str) -> dict[str, Any]:
    """The hyperparameters for editor ``name`` from a ``{editor name: {key: value}}`` mapping."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise EditorConfigError(
            f"{source}: expected a mapping of editor names to hyperparameters, e.g. 'dinm: {{lr: 1e-4}}'"
        )
    section = data.get(name, {})
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise EditorConfigError(f"{source}: the section {name!r} must map hyperparameter names to values")
    return dict(section)


@contextmanager
def weights_restored(weights: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Save just these weights; on exit, also after an error, copy the saved values back exactly (and say
    so: keys and values the generation kept from before stay valid, :mod:`pytest_safeedit.backends.stored`)."""
    import torch

    from pytest_safeedit.backends.stored import mark_restored

    saved = [(w.detach().clone(), w._version) for w in weights]
    try:
        yield
    finally:
        with torch.no_grad():
            for weight, (original, version) in zip(weights, saved):
                weight.copy_(original)
                weight.grad = None
                mark_restored(weight, version)


def assign_weights(model: Any, values: Mapping[str, torch.Tensor], restoring: Mapping[str, int] | None = None) -> None:
    """Copy each of ``values`` into the parameter of ``model`` it names (on its device, in its dtype).
    ``restoring``: the values are those these parameters had at these versions (a restore), and are said
    to be (:func:`~pytest_safeedit.backends.stored.mark_restored`)."""
    import torch

    from pytest_safeedit.backends.stored import mark_restored

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    for name, version in (restoring or {}).items():
        mark_restored(params[name], version)


@contextmanager
def only_trainable(model: Any, weights: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Turn gradients off for every parameter but ``weights``, and restore every flag on exit."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    targets = {id(w) for w in weights}
    try:
        for p in params:
            p.requires_grad_(id(p) in targets)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
            if id(p) in targets:
                p.grad = None


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)
