"""The generator seam: requests in, responses out, and an identity for the cache.

The engine only talks to a :class:`Generator`; the Hugging Face model in this process
(:class:`pytest_safeedit.backends.hf.HFGenerator`) is one implementation, and unit tests use a fake.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_safeedit.config.settings import GenerationSettings


@dataclass(frozen=True)
class Request:
    """One generation: the user text, the system prompt (an editor's, or None), the suite's settings,
    with sampled decoding which of the probe's samples it is, and the case's unsafe category and the
    probe's bare question (for judges that read them; neither changes the response)."""

    text: str
    system: str | None
    settings: GenerationSettings
    sample: int = 0
    category: str = ""
    question: str = ""


def sample_seed(seed: int, text: str, system: str | None) -> int:
    """The seed of a probe's samples: from the run's seed and the probe, never from what else runs."""
    digest = hashlib.sha256(f"{seed}\0{system}\0{text}".encode()).hexdigest()
    return int(digest[:12], 16)


def decoding_options(request: Request, greedy_seed: int | None = None) -> dict[str, Any]:
    """Temperature, top-p and seed for a backend that takes them per request (a server, vLLM): greedy is
    temperature 0 (with ``greedy_seed`` where given); a sample gets the suite's temperature and top-p
    and the probe's seed plus the sample's index, so that each sample is reproducible on its own."""
    settings = request.settings
    if not settings.sampled:
        return {"temperature": 0.0} if greedy_seed is None else {"temperature": 0.0, "seed": greedy_seed}
    return {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "seed": sample_seed(settings.seed, request.text, request.system) + request.sample,
    }


def prefix_order(requests: Sequence[Request]) -> list[int]:
    """The indices of ``requests`` sorted by system prompt and text, so that prompts which share a prefix
    (an attack template around different questions) reach a server one after another and its prefix
    cache still holds the template's keys and values."""
    return sorted(range(len(requests)), key=lambda i: (requests[i].system or "", requests[i].text, i))


class GenerationError(Exception):
    """Some requests of a batch could not be answered (a server failed); ``partial`` holds the responses
    that did come back, by position, None where a request failed. The engine keeps those."""

    def __init__(self, message: str, partial: Sequence[str | None]) -> None:
        super().__init__(message)
        self.partial = list(partial)


class Generator(Protocol):
    """Answers requests with greedy responses; what it answers from is named by its identity."""

    def identity(self) -> str | None:
        """A digest of everything besides the request that decides a response: the model's content,
        dtype, device and chat-template mode, for the generation cache; None when that cannot be known
        (a served model without a revision), which turns the generation cache off."""
        ...

    def generate(self, requests: Sequence[Request]) -> list[str]:
        """One response per request, in order; the requests of one call share their settings. A backend
        that answered only some raises :class:`GenerationError` with those."""
        ...

    def editable(self, settings: GenerationSettings) -> Any:
        """The in-process model that editors change, prompting as ``settings`` say (a
        :class:`pytest_safeedit.backends.hf.LoadedModel`); a backend without weights in this process raises, and
        the edit of the case reports why."""
        ...

    def metadata(self) -> dict[str, Any]:
        """Plain data describing the model for reports."""
        ...
