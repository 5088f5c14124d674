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
    "Case": "suite",
    "Probe": "suite",
    "Suite": "suite",
    "SuiteError": "suite",
    "load_suite": "suite_files",
    # judging
    "Judge": "judges",
    "Verdict": "judges",
    "RefusalJudge": "judges",
    "ClassifierJudge": "judges",
    "PanelJudge": "judges",
    "JudgeOptions": "judge_specs",
    "build_judge": "handles",
    # generating
    "Generator": "generation",
    "Request": "generation",
    "GenerationError": "generation",
    # editing
    "Editor": "editor",
    "EditorSpec": "editor",
    "EditDetails": "editor",
    # results
    "ProbeResult": "results",
    "PassRate": "results",
    # users' tests (what the fixtures hand out)
    "SafeEditModel": "handles",
    "SafeEditJudge": "handles",
    "EditedModel": "handles",
    "make_case": "handles",
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
    from pytest_safeedit.editor import EditDetails, Editor, EditorSpec
    from pytest_safeedit.generation import GenerationError, Generator, Request
    from pytest_safeedit.handles import EditedModel, SafeEditJudge, SafeEditModel, build_judge, make_case
    from pytest_safeedit.judge_specs import JudgeOptions
    from pytest_safeedit.judges import ClassifierJudge, Judge, PanelJudge, RefusalJudge, Verdict
    from pytest_safeedit.results import PassRate, ProbeResult
    from pytest_safeedit.suite import Case, Probe, Suite, SuiteError
    from pytest_safeedit.suite_files import load_suite
