"""Settings: the run's options as given, and what they resolve to (once, where they enter).

Precedence is command line > ini key > a suite's ``defaults:`` > built-in default; "auto" resolves to
the dtype, device and batch size actually used. The resolved objects feed the model, the cache key and
the report metadata, so that all three always agree.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_SUITE_PATTERNS = (
    "suites/*.yaml",
    "suites/*.yml",
    "suites/*.json",
    "*.safeedit.yaml",
    "*.safeedit.yml",
    "*.safeedit.json",
    "SafeEdit_*.json",
)
DEFAULT_MAX_NEW_TOKENS = 128
#: On the CPU a batch is also split so that its KV cache stays within a quarter of the memory (see
#: :meth:`pytest_safeedit.backends.hf.LoadedModel.rows_that_fit`).
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 16
#: Most padded prompt tokens (rows x longest prompt) per generation batch: on the CPU a prefill's time
#: grows with its tokens whatever the rows, so long prompts go a few at a time; a GPU takes more at once.
CPU_BATCH_TOKENS = 16384
GPU_BATCH_TOKENS = 65536
#: Memory kept for the keys and values of prompt prefixes shared by several prompts (MB).
DEFAULT_PREFIX_CACHE_MB = 1024
DTYPES = ("auto", "float32", "float16", "bfloat16")
CHAT_TEMPLATE_MODES = ("auto", "on", "off")
GGUF_CACHE_MODES = ("auto", "on", "off")
#: The offline rule judges (the default and its strict form), the only judge names spelled outside
#: the judge registry: settings need them for defaults, and their verdicts cost next to nothing (the
#: judge check is on for them by default, and they skip the verdict cache).
DEFAULT_JUDGE = "refusal"
STRICT_JUDGE = "refusal-strict"
OFFLINE_JUDGES = (DEFAULT_JUDGE, STRICT_JUDGE)
DECODING = "greedy"
SAMPLED = "sample"


@dataclass(frozen=True)
class RunSettings:
    """The plugin's options for one run, as given (command line over ini key); plain data."""

    model: str | None = None
    #: The suite files ``--safeedit-suite`` adds to the run (absolute paths).
    suites: tuple[str, ...] = ()
    backend: str = "hf"
    endpoint: str | None = None
    model_revision: str | None = None
    concurrency: int = 8
    request_timeout: float = 300.0
    retries: int = 4
    api_key_env: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    judge: tuple[str, ...] = (DEFAULT_JUDGE,)
    judge_policy: str = "any"
    judge_format: str = "auto"
    judge_rubric: str | None = None
    judge_check: str = "auto"
    judge_with_prompt: bool = False
    min_judge_agreement: float | None = None
    judge_unsafe_labels: tuple[str, ...] = ("1",)
    judge_max_length: int = 512
    report: str | None = None
    max_new_tokens: int | None = None
    max_input_tokens: int | None = None
    batch_size: int | None = None
    batch_tokens: int | None = None
    prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    device_map: str | None = None
    trust_remote_code: bool = False
    chat_template: str = "auto"
    editor: str = "none"
    editor_config: str | None = None
    #: --safeedit-repair: the folder of the repaired checkpoint, and the share of failing cases held out.
    repair: str | None = None
    repair_holdout: float = 0.0
    min_pass_rate: float | None = None
    min_category_rate: tuple[tuple[str, float], ...] = ()
    min_probe_rate: tuple[tuple[str, float], ...] = ()
    gate_on: str = "point"
    baseline: str | None = None
    update_baseline: bool = False
    baseline_strict: bool = False
    report_md: str | None = None
    report_html: str | None = None
    shard: tuple[int, int] | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    gguf_cache: str = "auto"
    show_intervals: bool = False
    samples: int = 1
    temperature: float | None = None
    top_p: float = 1.0
    suite_patterns: tuple[str, ...] = field(default=DEFAULT_SUITE_PATTERNS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def judge_name(self) -> str:
        """The judge as reports name it: a classifier that reads the prompt, a guard's named format, a
        rubric file and several judges' policy say so."""
        names = []
        for spec in self.judge:
            if self.judge_with_prompt and spec.startswith("classifier:"):
                spec = f"{spec} (with prompt)"
            elif self.judge_format != "auto" and spec.startswith("guard:"):
                spec = f"{spec} ({self.judge_format})"
            elif self.judge_rubric and spec.startswith("llm:"):
                spec = f"{spec} (rubric {self.judge_rubric})"
            names.append(spec)
        return names[0] if len(names) == 1 else " + ".join(names) + f" ({self.judge_policy})"

    @property
    def cheap_judge(self) -> bool:
        """Every judge is an offline one, whose verdicts cost next to nothing."""
        return all(spec in OFFLINE_JUDGES for spec in self.judge)

    @property
    def judge_check_on(self) -> bool:
        """Whether the run judges its cases' references: ``auto`` means for the offline judges, which
        cost nothing beside generation, and whenever a minimum agreement is asked for."""
        if self.judge_check == "auto":
            return self.cheap_judge or self.min_judge_agreement is not None
        return self.judge_check == "on"


@dataclass(frozen=True)
class ModelSettings:
    """How the model is loaded, resolved: a real dtype and device, never "auto" (plain data).

    ``max_input_tokens`` is only the default input limit of a model used outside a run (tests, scripts);
    in a run every request carries its suite's :class:`GenerationSettings`.
    """

    name_or_path: str
    dtype: str = "float32"
    device: str = "cpu"
    device_map: str | None = None
    trust_remote_code: bool = False
    chat_template: str = "auto"
    seed: int = 0
    max_input_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationSettings:
    """What decides a response besides the model and the input, resolved for one suite."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    #: None: the model's context length less the new tokens.
    max_input_tokens: int | None = None
    batch_size: int = CPU_BATCH_SIZE
    #: Most padded prompt tokens per batch (the Hugging Face backend; the batch size stays the most rows).
    batch_tokens: int = CPU_BATCH_TOKENS
    #: MB kept for the keys and values of shared prompt prefixes, each prefilled once (0: none shared).
    prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB
    decoding: str = DECODING
    #: With sampled decoding: responses per probe, and how they are drawn (seeded per probe and sample).
    samples: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    @property
    def sampled(self) -> bool:
        return self.decoding == SAMPLED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cache_part(self) -> dict[str, Any]:
        """The fields that change a response (the batch size and tokens do not: batched equals one at a time)."""
        out: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "max_input_tokens": self.max_input_tokens,
            "decoding": self.decoding,
        }
        if self.sampled:
            out.update(samples=self.samples, temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        return out


def is_gguf(name_or_path: str) -> bool:
    """Whether a model is named by a single GGUF file (by its suffix)."""
    return name_or_path.lower().endswith(".gguf")


def resolve_device(device: str, worker_index: int | None = None, device_map: str | None = None) -> str:
    """``auto`` becomes ``cuda`` (``cuda:N`` for xdist worker N on a machine with several GPUs) when a GPU
    is present, else ``cpu``. With a device map the weights are spread by transformers; the inputs go
    to the first GPU."""
    if device != "auto":
        return device
    if not gpu_possible():
        return "cpu"  # decided without importing torch, so that a fully cached run stays fast
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    count = torch.cuda.device_count()
    if device_map is None and worker_index is not None and count > 1:
        return f"cuda:{worker_index % count}"
    return "cuda"


#: Device nodes of the GPU drivers torch's CUDA (and ROCm) builds use on Linux.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def gpu_possible() -> bool:
    """False when this machine certainly has no GPU torch could use (Linux without a GPU driver's device
    nodes); True when it may have one, and torch must be asked."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(node) for node in GPU_DEVICE_NODES)


def checkpoint_dtype(name_or_path: str, trust_remote_code: bool) -> str:
    """The dtype a checkpoint was saved in, from its config (float32 when it does not say)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if value is None:
        return "float32"
    return str(value).removeprefix("torch.")


def resolve_dtype(dtype: str, device: str, name_or_path: str, trust_remote_code: bool = False) -> str:
    """``auto`` is float32 on the CPU and the checkpoint's own dtype on an accelerator."""
    if dtype != "auto":
        return dtype
    if device == "cpu" or is_gguf(name_or_path):
        return "float32"  # a GGUF file is quantized: it is dequantized to float32 unless told otherwise
    return checkpoint_dtype(name_or_path, trust_remote_code)


def resolve_model_settings(run: RunSettings, name_or_path: str, worker_index: int | None = None) -> ModelSettings:
    """The model's load settings with "auto" resolved (reads the checkpoint's config on a GPU only)."""
    device = resolve_device(run.device, worker_index, run.device_map)
    return ModelSettings(
        name_or_path=name_or_path,
        dtype=resolve_dtype(run.dtype, device, name_or_path, run.trust_remote_code),
        device=device,
        device_map=run.device_map,
        trust_remote_code=run.trust_remote_code,
        chat_template=run.chat_template,
        seed=run.seed,
        max_input_tokens=run.max_input_tokens,
    )


def default_batch_size(device: str) -> int:
    """Requests handed to an in-process model at once on ``device`` (a backend may say otherwise:
    :attr:`pytest_safeedit.backends.registry.BackendSpec.batch_size`)."""
    return CPU_BATCH_SIZE if device == "cpu" else GPU_BATCH_SIZE


def default_batch_tokens(device: str) -> int:
    """Padded prompt tokens per batch of the Hugging Face backend on ``device``."""
    return CPU_BATCH_TOKENS if device == "cpu" else GPU_BATCH_TOKENS


def resolve_generation(
    run: RunSettings, suite_defaults: Mapping[str, Any], device: str, default_batch: int | None = None
) -> GenerationSettings:
    """A suite's generation settings: option (or ini key), else the suite's default, else built-in
    (``default_batch``: the backend's batch size; None: the device's)."""

    def pick(option: int | None, key: str, default: int | None) -> int | None:
        if option is not None:
            return option
        value = suite_defaults.get(key)
        return int(value) if value is not None else default

    return GenerationSettings(
        max_new_tokens=int(
            pick(run.max_new_tokens, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS) or DEFAULT_MAX_NEW_TOKENS
        ),
        max_input_tokens=pick(run.max_input_tokens, "max_input_tokens", None),
        batch_size=int(pick(run.batch_size, "batch_size", default_batch or default_batch_size(device)) or 1),
        batch_tokens=int(pick(run.batch_tokens, "batch_tokens", default_batch_tokens(device)) or 1),
        prefix_cache_mb=run.prefix_cache_mb,
        decoding=SAMPLED if run.samples > 1 or run.temperature is not None else DECODING,
        samples=run.samples,
        temperature=1.0 if run.temperature is None else run.temperature,
        top_p=run.top_p,
        seed=run.seed,
    )


def cpu_threads_per_worker(worker_count: int | None) -> int | None:
    """On a CPU run under xdist, each worker's share of the cores (None outside xdist)."""
    if not worker_count:
        return None
    return max(1, (os.cpu_count() or 1) // worker_count)
