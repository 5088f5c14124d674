"""pytest-safeedit: SafeEdit-style LLM safety cases as pytest items."""

from __future__ import annotations

__version__ = "0.1.0"
