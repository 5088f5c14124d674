"""Hook specifications of pytest-safeedit (for plugins and conftest.py files)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_safeedit.editor import EditorSpec


def pytest_safeedit_editors(config: pytest.Config) -> list[EditorSpec]:
    """Called once in ``pytest_configure``: return editors to offer under ``--safeedit-editor``.

    Example (in a plugin or conftest.py)::

        from pytest_safeedit.editor import EditorSpec

        def pytest_safeedit_editors(config):
            return [EditorSpec("my-editor", MyEditor, defaults={"lr": 1e-4})]
    """
    return []
