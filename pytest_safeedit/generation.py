"""The generator seam: requests in, responses out, and an identity for the cache.

The engine only talks to a :class:`Generator`; the Hugging Face model in this process
(:class:`pytest_safeedit.hf.HFGenerator`) is one implementation, and unit tests use a fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_safeedit.settings import GenerationSettings


@dataclass(frozen=True)
class Request:
    """One generation: the user text, the system prompt (an editor's, or None), the suite's settings,
    and, with sampled decoding, which of the probe's samples it is."""

    text: str
    system: str | None
    settings: GenerationSettings
    sample: int = 0


class Generator(Protocol):
    """Answers requests with greedy responses; what it answers from is named by its identity."""

    def identity(self) -> str:
        """A digest of everything besides the request that decides a response: the model's content,
        dtype, device and chat-template mode, for the generation cache."""
        ...

    def generate(self, requests: Sequence[Request]) -> list[str]:
        """One response per request, in order; the requests of one call share their settings."""
        ...

    def editable(self, settings: GenerationSettings) -> Any:
        """The in-process model that editors change, prompting as ``settings`` say (a
        :class:`pytest_safeedit.hf.LoadedModel`); a backend without weights in this process raises, and
        the edit of the case reports why."""
        ...

    def metadata(self) -> dict[str, Any]:
        """Plain data describing the model for reports."""
        ...
