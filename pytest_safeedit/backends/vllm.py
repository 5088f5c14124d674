"""vLLM in this process (``--safeedit-backend vllm``): unedited runs on GPUs, batched by vLLM itself.

The package is an optional extra (``pip install 'pytest-safeedit[vllm]'``) and needs a GPU; nothing
here imports it until the first generation. Editors need the weights in this process in a form they
can change, so this backend refuses them (the plugin says so before the run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_safeedit.backends.base import Request, decoding_options, prefix_order
from pytest_safeedit.config.settings import ModelSettings


class VLLMGenerator:
    """The :class:`~pytest_safeedit.backends.base.Generator` over a ``vllm.LLM``.

    Greedy decoding is temperature 0; sampled decoding seeds each request from the run's seed, the probe
    and the sample index (like the other backends). The chat template is the tokenizer's unless the
    run says ``off``; over-long inputs keep their last ``max_input_tokens`` tokens. vLLM's automatic
    prefix caching is on, and requests are handed over in text order, so that prompts sharing an attack
    template (or the chat template's preamble) reuse its keys and values.
    """

    backend = "vllm"

    def __init__(
        self, settings: ModelSettings, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9
    ) -> None:
        self.settings = settings
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self._llm: Any = None
        self._identity: str | None = None

    @property
    def llm(self) -> Any:
        if self._llm is None:
            try:
                import vllm
            except ImportError:
                raise RuntimeError(
                    "--safeedit-backend vllm needs the vllm package (and a GPU): pip install 'pytest-safeedit[vllm]'"
                ) from None
            self._llm = vllm.LLM(
                model=self.settings.name_or_path,
                dtype=self.settings.dtype,
                seed=self.settings.seed,
                tensor_parallel_size=self.tensor_parallel_size,
                gpu_memory_utilization=self.gpu_memory_utilization,
                trust_remote_code=self.settings.trust_remote_code,
                enable_prefix_caching=True,
            )
        return self._llm

    def identity(self) -> str | None:
        """The content of the model's files (a local folder or file, or a hub id's cached snapshot), the
        dtype and the chat-template mode; None (no caching) when the files cannot be found here."""
        from pytest_safeedit.util.cache import digest, files_identity

        if self._identity is None:
            content = files_identity(self.settings.name_or_path)
            if content is None:
                return None
            self._identity = digest(self.backend, content, self.settings.dtype, self.settings.chat_template)
        return self._identity

    def sampling_params(self, request: Request) -> Any:
        from vllm import SamplingParams

        settings = request.settings
        options: dict[str, Any] = {"max_tokens": settings.max_new_tokens}
        if settings.max_input_tokens is not None:
            options["truncate_prompt_tokens"] = settings.max_input_tokens
        options.update(decoding_options(request))
        return SamplingParams(**options)

    def generate(self, requests: Sequence[Request]) -> list[str]:
        llm = self.llm  # first: a missing package is said before anything imports from it
        order = prefix_order(requests)
        answers = self._generate(llm, [requests[i] for i in order])
        out = [""] * len(requests)
        for index, answer in zip(order, answers):
            out[index] = answer
        return out

    def _generate(self, llm: Any, requests: Sequence[Request]) -> list[str]:
        params = [self.sampling_params(r) for r in requests]
        if self.settings.chat_template == "off":
            prompts = [r.text if not r.system else f"{r.system}\n\n{r.text}" for r in requests]
            outputs = llm.generate(prompts, params, use_tqdm=False)
        else:
            conversations = [
                ([{"role": "system", "content": r.system}] if r.system else []) + [{"role": "user", "content": r.text}]
                for r in requests
            ]
            outputs = llm.chat(conversations, params, use_tqdm=False)
        return [str(o.outputs[0].text) for o in outputs]

    def editable(self, settings: Any) -> Any:
        raise RuntimeError(
            "editing needs the model in a form editors change; the vllm backend does not offer one. "
            "Use --safeedit-backend hf to run an editor"
        )

    def metadata(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model_path": self.settings.name_or_path,
            "dtype": self.settings.dtype,
            "device": self.settings.device,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "chat_template": self.settings.chat_template,
        }
