"""Keys of the plugin's state in ``config.stash``."""

from __future__ import annotations

import pytest

from pytest_safeedit.options import RunSettings
from pytest_safeedit.session import SafeEditSession

settings_key = pytest.StashKey[RunSettings]()
session_key = pytest.StashKey[SafeEditSession]()
#: Node ids of suite files that failed to load.
suite_errors_key = pytest.StashKey[set[str]]()
