"""pytest-safeedit: SafeEdit-style LLM safety cases as pytest items.

The public API is listed in ``__all__``; each name is imported on first use, so that importing the plugin
costs nothing (torch and transformers load only when a model, judge or editor is built).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_PUBLIC = {
    # the data model
    "Case": "cases.model",
    "Probe": "cases.model",
    "Suite": "cases.model",
    "SuiteError": "cases.model",
    "load_suite": "cases.loading",
    # judging
    "Judge": "judges.base",
    "Verdict": "judges.base",
    "RefusalJudge": "judges.refusal",
    "ClassifierJudge": "judges.classifier",
    "PanelJudge": "judges.base",
    "JudgeOptions": "judges.registry",
    "build_judge": "run.handles",
    # generating
    "Generator": "backends.base",
    "Request": "backends.base",
    "GenerationError": "backends.base",
    # editing
    "Editor": "editors.base",
    "EditorSpec": "editors.base",
    "EditDetails": "editors.base",
    "InputRouter": "editors.base",
    # results
    "ProbeResult": "results.probes",
    "PassRate": "results.probes",
    # users' tests (what the fixtures hand out)
    "SafeEditModel": "run.handles",
    "SafeEditJudge": "run.handles",
    "EditedModel": "run.handles",
    "make_case": "run.handles",
}

__all__ = [
    "__version__",
    "Case",
    "Probe",
    "Suite",
    "SuiteError",
    "load_suite",
    "Judge",
    "Verdict",
    "RefusalJudge",
    "ClassifierJudge",
    "PanelJudge",
    "JudgeOptions",
    "build_judge",
    "Generator",
    "Request",
    "GenerationError",
    "Editor",
    "EditorSpec",
    "EditDetails",
    "InputRouter",
    "ProbeResult",
    "PassRate",
    "SafeEditModel",
    "SafeEditJudge",
    "EditedModel",
    "make_case",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_safeedit' has no attribute {name!r}")
    value = getattr(import_module(f"pytest_safeedit.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from pytest_safeedit.backends.base import GenerationError, Generator, Request
    from pytest_safeedit.cases.loading import load_suite
    from pytest_safeedit.cases.model import Case, Probe, Suite, SuiteError
    from pytest_safeedit.editors.base import EditDetails, Editor, EditorSpec, InputRouter
    from pytest_safeedit.judges.base import Judge, PanelJudge, Verdict
    from pytest_safeedit.judges.classifier import ClassifierJudge
    from pytest_safeedit.judges.refusal import RefusalJudge
    from pytest_safeedit.judges.registry import JudgeOptions
    from pytest_safeedit.results.probes import PassRate, ProbeResult
    from pytest_safeedit.run.handles import EditedModel, SafeEditJudge, SafeEditModel, build_judge, make_case
