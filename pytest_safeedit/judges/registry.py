"""Judge specs: what each ``--safeedit-judge`` value names, how it is built, and its identity for the
verdict cache."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pytest_safeedit.config.settings import OFFLINE_JUDGES, STRICT_JUDGE
from pytest_safeedit.judges.base import Judge, PanelJudge
from pytest_safeedit.judges.classifier import ClassifierJudge
from pytest_safeedit.judges.formats import GuardFormat
from pytest_safeedit.judges.refusal import RefusalJudge
from pytest_safeedit.util.cache import cache_root

#: The judge kinds a spec may name before a colon.
MODEL_JUDGES = ("classifier", "guard", "llm")
#: The SafeEdit paper's safety classifier on the Hugging Face hub (RoBERTa-large; class 1 is unsafe; it
#: reads the response alone, up to 512 tokens): what ``--safeedit-judge safeedit`` loads.
SAFEEDIT_CLASSIFIER = "zjunlp/SafeEdit-Safety-Classifier"


def check_judge_spec(text: str) -> str:
    """``text`` if it names a judge (``refusal``, ``refusal-strict``, ``safeedit`` or ``KIND:PATH_OR_ID``),
    else ValueError saying which judges there are."""
    kind, _, path = text.partition(":")
    if text in (*OFFLINE_JUDGES, "safeedit") or (kind in MODEL_JUDGES and path.strip()):
        return text
    raise ValueError(f"{text!r} is not a judge; {JUDGE_HELP}")


@dataclass(frozen=True)
class JudgeOptions:
    """How model judges load and read (from the run's options).

    Args:
        unsafe_labels: a classifier's classes that mean unsafe.
        max_length: a classifier's input limit in tokens.
        with_prompt: a classifier reads the prompt too.
        guard_format: a guard model's format, or ``auto`` (from its folder or name).
        rubric: the rubric file of ``llm:`` judges (None: the built-in rubric).
        device: torch device.
        dtype: torch dtype of guard and rubric judges (``auto``: float32 on the CPU).
        batch_size: checks per forward pass of guard and rubric judges.
        trust_remote_code: allow code shipped with the models.
        cache_dir: where the demo guard is built (``guard:demo``) and GGUF judges are converted.
        gguf_cache: which GGUF judges are converted once (``--safeedit-gguf-cache``: auto, on, off).
        local_paths: spec -> the local folder it stands for, where a name is not a path or hub id (the
            demo judges: ``guard:demo`` -> the built demo guard; see
            :func:`pytest_safeedit.demo.guard.with_demo_judges`).
    """

    unsafe_labels: tuple[str, ...] = ("1",)
    max_length: int = 512
    with_prompt: bool = False
    guard_format: str = "auto"
    rubric: str | None = None
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 8
    trust_remote_code: bool = False
    cache_dir: str | None = None
    gguf_cache: str = "auto"
    local_paths: Mapping[str, str] = field(default_factory=dict)


def judge_path(spec: str, options: JudgeOptions) -> str:
    """The model a ``kind:PATH_OR_ID`` spec names: its local folder from ``options.local_paths``, else the
    path or hub id it spells (checked)."""
    if spec in options.local_paths:
        return options.local_paths[spec]
    path = spec.split(":", 1)[1]
    if path == "demo":
        raise ValueError(
            f"{spec!r} names a built-in demo, which this caller did not build; use pytest_safeedit.build_judge "
            "(it builds the demos), or give its folder in JudgeOptions.local_paths"
        )
    from pytest_safeedit.config.model_source import check_model_source

    check_model_source(path, what="--safeedit-judge")
    return path


def guard_format_of(spec: str, path: str, options: JudgeOptions) -> GuardFormat:
    """The :class:`~pytest_safeedit.judges.formats.GuardFormat` a guard or rubric judge reads with."""
    from pytest_safeedit.judges.formats import FORMATS, GUARD_FORMATS, detect_format, load_rubric, rubric_format

    if spec.startswith("llm:"):
        return rubric_format(load_rubric(options.rubric))
    name = options.guard_format if options.guard_format != "auto" else detect_format(path) or detect_format(spec)
    if name is None:
        raise ValueError(
            f"cannot tell the format of guard model {spec.split(':', 1)[1]!r} from its folder or name; "
            f"add --safeedit-judge-format with one of {', '.join(GUARD_FORMATS)}"
        )
    return FORMATS[name]


def specs_read_question(specs: Sequence[str], options: JudgeOptions) -> bool:
    """Whether judges of these specs read each probe's bare question (a guard whose format does,
    ``harmbench-benchmark``: named, or detected from the guard's folder or name); known without loading a
    judge. A guard whose format cannot be told reads no question (building it reports why)."""
    for spec in specs:
        if not spec.startswith("guard:"):
            continue
        try:
            if guard_format_of(spec, judge_path(spec, options), options).reads_question:
                return True
        except Exception:  # noqa: BLE001 - a guard that cannot be found or read: building it says why
            continue
    return False


def safeedit_classifier_path() -> str:
    """Where the SafeEdit classifier is: its snapshot in the local Hugging Face cache, or its hub id when
    it may still be downloaded; a clear error when it is not cached and the hub is off."""
    import os

    from huggingface_hub import constants, snapshot_download

    try:
        return str(snapshot_download(SAFEEDIT_CLASSIFIER, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: say how to get it
        pass
    help_text = (
        f"the SafeEdit safety classifier ({SAFEEDIT_CLASSIFIER}) is not in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); download it once on a machine with network (it is gated: accept its terms "
        f"on the hub, then `huggingface-cli download {SAFEEDIT_CLASSIFIER}`), or give a local copy as "
        "--safeedit-judge classifier:FOLDER"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ValueError(help_text)
    try:
        return str(snapshot_download(SAFEEDIT_CLASSIFIER))
    except Exception as exc:  # noqa: BLE001 - no network, no access, ...: the same advice
        raise ValueError(f"{help_text} ({type(exc).__name__})") from None


def build_judge(spec: str, options: JudgeOptions | None = None) -> Judge:
    """The judge a ``--safeedit-judge`` value names: ``refusal``, ``refusal-strict``, ``safeedit`` (the
    paper's classifier), ``classifier:PATH_OR_ID``, ``guard:PATH_OR_ID`` or ``llm:PATH_OR_ID``."""
    options = options or JudgeOptions()
    if spec in OFFLINE_JUDGES:
        return RefusalJudge(name=spec, strict=spec == STRICT_JUDGE)
    if spec == "safeedit":
        # The paper's protocol, whatever the classifier options say: class 1, the response alone, 512 tokens.
        return ClassifierJudge(
            safeedit_classifier_path(), unsafe_labels=("1",), max_length=512, device=options.device, name=spec
        )
    kind = check_judge_spec(spec).split(":", 1)[0]
    if kind == "classifier":
        return ClassifierJudge(
            spec.split(":", 1)[1],
            unsafe_labels=options.unsafe_labels,
            max_length=options.max_length,
            device=options.device,
            trust_remote_code=options.trust_remote_code,
            with_prompt=options.with_prompt,
        )
    from pytest_safeedit.config.settings import resolve_dtype
    from pytest_safeedit.judges.guard import GuardJudge

    path = judge_path(spec, options)
    fmt = guard_format_of(spec, path, options)
    name = spec if kind == "llm" or options.guard_format == "auto" else f"{spec} ({fmt.name})"
    return GuardJudge(
        path,
        fmt,
        name=name,
        device=options.device,
        dtype=resolve_dtype(options.dtype, options.device, path, options.trust_remote_code),
        batch_size=options.batch_size,
        trust_remote_code=options.trust_remote_code,
        gguf_cache=(cache_root(options.cache_dir), options.gguf_cache),
    )


def build_judges(specs: Sequence[str], policy: str = "any", options: JudgeOptions | None = None) -> Judge:
    """One judge, or several as a :class:`PanelJudge` with ``policy``."""
    if len(specs) == 1:
        return build_judge(specs[0], options)
    return PanelJudge([build_judge(s, options) for s in specs], policy)


JUDGE_HELP = (
    "use 'refusal', 'refusal-strict', 'safeedit' (the SafeEdit paper's classifier, from the Hugging Face "
    "cache), 'classifier:PATH_OR_ID' (a sequence classifier, e.g. one train-judge wrote), 'guard:PATH_OR_ID' "
    "(a guard model: Llama Guard 3/4, ShieldGemma, WildGuard, HarmBench; 'guard:demo' is the built-in demo "
    "guard) or 'llm:PATH_OR_ID' (a chat model with a rubric)"
)


def module_digest(module: ModuleType) -> str:
    """The content of the module that decides verdicts, as imported (not a file found by name): a changed
    rule changes the verdict cache's key, and a moved module is found wherever it is."""
    source = getattr(module, "__file__", None)
    if source is None:
        raise ValueError(f"{module.__name__} has no source file to name its rules by")
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def judge_identity(spec: str, options: JudgeOptions | None = None, memo_file: Any = None) -> str | None:
    """What decides the verdicts of the judge ``spec`` names, without loading it (for the verdict cache):
    the offline judges by their rules (the refusal module's source and the verdicts'), a model judge by its files' content, its
    format or rubric, and its options. None when that cannot be known here (a hub id not in the local
    cache)."""
    from pytest_safeedit.util.cache import digest, files_identity

    options = options or JudgeOptions()
    if spec in OFFLINE_JUDGES:
        from pytest_safeedit.judges import base, refusal

        return digest("judge", spec, module_digest(refusal), module_digest(base))
    if spec == "safeedit":
        content = files_identity(SAFEEDIT_CLASSIFIER, memo_file)
        return None if content is None else digest("judge", "safeedit", content)
    kind = spec.split(":", 1)[0]
    if kind not in MODEL_JUDGES:
        return None
    if kind == "classifier":
        content = files_identity(spec.split(":", 1)[1], memo_file)
        if content is None:
            return None
        return digest(
            "judge", "classifier", content, list(options.unsafe_labels), options.max_length, options.with_prompt
        )
    from pytest_safeedit.config.settings import resolve_dtype

    path = judge_path(spec, options)
    content = files_identity(path, memo_file)
    if content is None:
        return None
    fmt = guard_format_of(spec, path, options)
    rubric = None
    if kind == "llm":
        from pytest_safeedit.judges.formats import load_rubric

        loaded = load_rubric(options.rubric)
        rubric = (loaded.template, loaded.unsafe, loaded.safe, loaded.max_new_tokens)
    dtype = resolve_dtype(options.dtype, options.device, path, options.trust_remote_code)
    from pytest_safeedit.judges import formats as guard_formats
    from pytest_safeedit.judges import guard

    source = [module_digest(guard_formats), module_digest(guard)]
    return digest("judge", kind, content, fmt.name, rubric, dtype, options.device, source)


def judges_identity(
    specs: Sequence[str], policy: str = "any", options: JudgeOptions | None = None, memo_file: Any = None
) -> str | None:
    """The identity of one judge, or of several with their policy (None if any member's is unknown)."""
    parts = [judge_identity(s, options, memo_file) for s in specs]
    if any(p is None for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    from pytest_safeedit.util.cache import digest

    return digest("panel", parts, policy)
