"""The backend registry: each ``--safeedit-backend`` name, what it needs and how its generator is built.

This is the one place that knows backends by name; the rest of the plugin asks a :class:`BackendSpec`
what it needs. Plugins and ``conftest.py`` files add backends with the ``pytest_safeedit_backends`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_safeedit.config.settings import CPU_BATCH_SIZE, GPU_BATCH_SIZE, ModelSettings, RunSettings

if TYPE_CHECKING:
    from pytest_safeedit.backends.base import Generator


class BackendError(ValueError):
    """A backend that does not exist, or options it cannot be used with; says how to fix it."""


@dataclass(frozen=True)
class BackendContext:
    """What a backend's generator is built from."""

    run: RunSettings
    #: The resolved load settings of ``--safeedit-model`` (building the demo model first); for backends
    #: that load the model here (``loads_model``).
    model: Callable[[], ModelSettings]
    #: The plugin's cache folder (GGUF conversions) and the file-hash memo of model identities.
    cache_root: Path
    file_hashes: Path | None = None
    #: Processes sharing this machine (xdist workers): a CPU backend splits the cores among them.
    worker_count: int = 1


@dataclass(frozen=True)
class BackendSpec:
    """One backend.

    Attributes:
        name: the ``--safeedit-backend`` value.
        build: makes the generator.
        description: one line for ``--help``.
        loads_model: ``--safeedit-model`` is a model this backend loads here (a local folder, a ``.gguf``
            file or a hub id in the local cache): it is checked before the run, its load settings are
            resolved (``context.model()``), and the ``pytest_safeedit_generator`` hook is asked first.
            False for a backend that reads the name its own way (a plugin's, a server's).
        editable: the model's weights are in this process as torch modules, so editors can change them.
        endpoint: the model is served elsewhere: ``--safeedit-endpoint`` is required, ``--safeedit-model``
            names the served model (not checked on this machine), and no model settings are resolved.
        batch_size: the requests handed to the generator at once by default (None: the device's default,
            64 on the CPU and 16 on a GPU).
    """

    name: str
    build: Callable[[BackendContext], Generator]
    description: str = ""
    loads_model: bool = False
    editable: bool = False
    endpoint: bool = False
    batch_size: Callable[[RunSettings], int] | None = None

    def default_batch_size(self, run: RunSettings, device: str) -> int:
        if self.batch_size is not None:
            return self.batch_size(run)
        return CPU_BATCH_SIZE if device == "cpu" else GPU_BATCH_SIZE

    def check(self, run: RunSettings) -> None:
        """Raise :class:`BackendError` for options this backend cannot be used with."""
        if self.endpoint and not run.endpoint:
            raise BackendError(
                f"--safeedit-backend {self.name} needs --safeedit-endpoint URL, the server's API base "
                "(e.g. http://127.0.0.1:8000/v1)"
            )
        if run.endpoint and not self.endpoint:
            raise BackendError(
                f"--safeedit-endpoint is used by --safeedit-backend openai only (or another served backend; the "
                f"backend is {self.name}); add --safeedit-backend openai or drop the endpoint"
            )
        if run.editor != "none" and not self.editable:
            raise BackendError(
                f"--safeedit-editor {run.editor} needs the model's weights in this process, which the "
                f"{self.name} backend does not hold; use --safeedit-backend hf (the default) with the "
                "model's folder or hub id to run an editor"
            )


def _build_hf(context: BackendContext) -> Generator:
    from pytest_safeedit.backends.hf import HFGenerator
    from pytest_safeedit.config.settings import cpu_threads_per_worker

    settings = context.model()
    threads = cpu_threads_per_worker(context.worker_count)
    if threads is not None and settings.device == "cpu":
        import torch

        # Workers share the CPU: split its cores instead of each one taking all of them.
        torch.set_num_threads(threads)
    return HFGenerator(
        settings,
        file_hashes=context.file_hashes,
        gguf_cache=context.cache_root,
        gguf_mode=context.run.gguf_cache,
    )


def _build_openai(context: BackendContext) -> Generator:
    from pytest_safeedit.backends.openai import EndpointSettings, OpenAIGenerator

    run = context.run
    if run.endpoint is None or run.model is None:
        raise BackendError("--safeedit-backend openai needs --safeedit-endpoint URL and --safeedit-model NAME")
    endpoint = EndpointSettings(
        url=run.endpoint,
        model=run.model,
        revision=run.model_revision,
        concurrency=run.concurrency,
        timeout=run.request_timeout,
        retries=run.retries,
        api_key_env=run.api_key_env,
    )
    return OpenAIGenerator(endpoint, seed=run.seed)


def _build_vllm(context: BackendContext) -> Generator:
    from pytest_safeedit.backends.vllm import VLLMGenerator

    return VLLMGenerator(
        context.model(),
        tensor_parallel_size=context.run.tensor_parallel_size,
        gpu_memory_utilization=context.run.gpu_memory_utilization,
    )


def builtin_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            "hf",
            _build_hf,
            "loads the model into this process with transformers (needed by editors)",
            loads_model=True,
            editable=True,
        ),
        BackendSpec(
            "openai",
            _build_openai,
            "asks an OpenAI-compatible server at --safeedit-endpoint",
            endpoint=True,
            # Four requests per request in flight, so that the server's concurrency is used.
            batch_size=lambda run: 4 * run.concurrency,
        ),
        BackendSpec(
            "vllm",
            _build_vllm,
            "runs vLLM in this process on GPUs (the 'vllm' extra)",
            loads_model=True,
            # vLLM schedules its own batches from all it is given.
            batch_size=lambda run: 256,
        ),
    ]


#: The built-in backends by name (what ``--help`` lists; plugins may add more).
BUILTIN_BACKENDS: Mapping[str, BackendSpec] = {spec.name: spec for spec in builtin_backends()}


def backend_registry(extra: Iterable[Iterable[BackendSpec]] = ()) -> dict[str, BackendSpec]:
    """The built-in backends and those plugins offer (each hook's list); a name given twice is an error."""
    registry = dict(BUILTIN_BACKENDS)
    for specs in extra:
        for spec in specs:
            if spec.name in registry:
                raise BackendError(f"two backends are named {spec.name!r}; give the plugin's backend another name")
            registry[spec.name] = spec
    return registry


def choose_backend(name: str, registry: Mapping[str, BackendSpec]) -> BackendSpec:
    """The backend named ``name``, or an error listing the names there are."""
    if name not in registry:
        raise BackendError(f"--safeedit-backend {name!r} is not a backend; use one of {', '.join(registry)}")
    return registry[name]
