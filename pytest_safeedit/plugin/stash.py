"""Keys of the plugin's state in ``config.stash``."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_safeedit.config.settings import RunSettings
from pytest_safeedit.reports.baseline import Baseline
from pytest_safeedit.run.evaluator import Evaluator

settings_key = pytest.StashKey[RunSettings]()
#: The evaluator of this process, with its engine (model, judge, cache) and the suites' editors.
evaluator_key = pytest.StashKey[Evaluator]()
#: Node ids of suite files that failed to load.
suite_errors_key = pytest.StashKey[set[str]]()
#: The baseline to compare with (absent without --safeedit-baseline, or when updating it).
baseline_key = pytest.StashKey[Baseline]()
#: The gate thresholds of each collected suite, by suite key, as plain data.
suite_gates_key = pytest.StashKey[dict[str, Any]]()
