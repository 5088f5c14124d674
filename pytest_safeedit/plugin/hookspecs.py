"""Hook specifications of pytest-safeedit (for plugins and conftest.py files)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_safeedit.backends.base import Generator
    from pytest_safeedit.backends.registry import BackendSpec
    from pytest_safeedit.config.settings import ModelSettings
    from pytest_safeedit.editors.base import EditorSpec


def pytest_safeedit_editors(config: pytest.Config) -> list[EditorSpec]:
    """Called once in ``pytest_configure``: return editors to offer under ``--safeedit-editor``.

    Example (in a plugin or conftest.py)::

        from pytest_safeedit.editors.base import EditorSpec

        def pytest_safeedit_editors(config):
            return [EditorSpec("my-editor", MyEditor, defaults={"lr": 1e-4})]
    """
    return []


def pytest_safeedit_backends(config: pytest.Config) -> list[BackendSpec]:
    """Called once in ``pytest_configure``: return backends to offer under ``--safeedit-backend``.

    Example (in a plugin or conftest.py)::

        from pytest_safeedit.backends.registry import BackendSpec

        def pytest_safeedit_backends(config):
            return [BackendSpec("echo", lambda context: EchoGenerator(), "answers with the prompt")]
    """
    return []


@pytest.hookspec(firstresult=True)
def pytest_safeedit_generator(config: pytest.Config, settings: ModelSettings) -> Generator | None:
    """Called once per process when the first response is needed: return a generator to answer
    requests with (any object of the :class:`pytest_safeedit.backends.base.Generator` protocol), or None
    for the backend's own (asked for backends that load the model in this process: ``hf``, ``vllm``). ``settings`` are the resolved load settings of
    ``--safeedit-model``.

    Example (in a plugin or conftest.py)::

        def pytest_safeedit_generator(config, settings):
            if settings.name_or_path == "echo":
                return EchoGenerator()
    """
    return None
