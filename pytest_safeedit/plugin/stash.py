"""Keys of the plugin's state in ``config.stash``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_safeedit.config.settings import RunSettings
    from pytest_safeedit.editors.registry import SuiteEditors
    from pytest_safeedit.reports.baseline import Baseline
    from pytest_safeedit.run.evaluator import Evaluator

# The keys name their values' types for type checkers only (annotations are not evaluated): the stash is
# the plugin's meeting point, and importing the engine here would put every module that reads a key on
# top of it.
settings_key: pytest.StashKey[RunSettings] = pytest.StashKey()
#: The evaluator of this process, with its engine (model, judge, cache) and the suites' editors.
evaluator_key: pytest.StashKey[Evaluator] = pytest.StashKey()
#: Node ids of suite files that failed to load.
suite_errors_key: pytest.StashKey[set[str]] = pytest.StashKey()
#: The baseline to compare with (absent without --safeedit-baseline, or when updating it).
baseline_key: pytest.StashKey[Baseline] = pytest.StashKey()
#: The gate thresholds of each collected suite, by suite key, as plain data.
suite_gates_key: pytest.StashKey[dict[str, Any]] = pytest.StashKey()
#: With --safeedit-repair: the editors the repair edits with (the items run unedited).
repair_editors_key: pytest.StashKey[SuiteEditors] = pytest.StashKey()
