"""The public API: every name in ``__all__`` resolves, and importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest_safeedit


def test_every_public_name_resolves() -> None:
    assert set(pytest_safeedit.__all__) == {"__version__", *pytest_safeedit._PUBLIC}
    for name in pytest_safeedit.__all__:
        assert getattr(pytest_safeedit, name) is not None, name


def test_importing_the_package_and_the_plugin_loads_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, pytest_safeedit, pytest_safeedit.plugin.hooks; "
        "print('torch' in sys.modules, 'transformers' in sys.modules, 'yaml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]
