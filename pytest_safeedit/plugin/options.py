"""Command-line options and ini keys of the plugin, and the run settings read from them."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_safeedit.backends.registry import BUILTIN_BACKENDS
from pytest_safeedit.cases.loading import bundled_suites, find_suite
from pytest_safeedit.cases.thresholds import GATE_ON
from pytest_safeedit.config.settings import (
    CHAT_TEMPLATE_MODES,
    CPU_BATCH_SIZE,
    CPU_BATCH_TOKENS,
    DEFAULT_JUDGE,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_PREFIX_CACHE_MB,
    DEFAULT_SUITE_PATTERNS,
    DTYPES,
    GGUF_CACHE_MODES,
    GPU_BATCH_SIZE,
    GPU_BATCH_TOKENS,
    RunSettings,
)
from pytest_safeedit.judges.base import POLICIES
from pytest_safeedit.judges.formats import GUARD_FORMATS
from pytest_safeedit.judges.registry import check_judge_spec


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give a whole number such as 64") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; give a number of at least {minimum}")
        return value

    parse.__name__ = "integer"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def shard_spec(text: str) -> tuple[int, int]:
    """argparse type: ``I/N`` with 1 <= I <= N."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shard; write I/N with 1 <= I <= N, e.g. 2/4")
    return i, n


def rate_value(text: str) -> float:
    """argparse type: a pass rate from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a rate from 0 to 1, e.g. 0.9") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1; give a rate such as 0.9 for 90%")
    return value


def named_rate(text: str) -> tuple[str, float]:
    """argparse type: ``NAME=RATE``."""
    name, sep, rate = text.rpartition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=RATE; write e.g. 'pornography=0.95' or 'DS=0.9'")
    return name.strip(), rate_value(rate)


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one above 0, e.g. 0.7") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not above 0; give a number such as 0.7")
    return value


def top_p_value(text: str) -> float:
    """argparse type: a probability mass above 0 and at most 1."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{value} is above 1; give a probability mass such as 0.9")
    return value


def endpoint_url(text: str) -> str:
    """argparse type: an http(s) URL with a host."""
    from pytest_safeedit.backends.openai import check_endpoint_url

    try:
        return check_endpoint_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def suite_spec(text: str) -> str:
    """argparse type: a bundled suite's name or a suite file's path (checked in ``pytest_configure``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is empty; give a bundled suite's name, e.g. sample, or a file's path"
        )
    return text.strip()


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    parse.__name__ = "choice"
    return parse


def device_spec(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""
    if re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps")


def judge_spec(text: str) -> str:
    """argparse type: a judge's name (``refusal``, ``refusal-strict``, ``safeedit``) or ``KIND:PATH_OR_ID``."""
    try:
        return check_judge_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class Option:
    """One ``--safeedit-*`` flag, with its ini key when a project would pin it."""

    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    default: Any = None
    ini: bool = True
    is_flag: bool = False
    multiple: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option(
        "--safeedit-model",
        "Model to test: a local folder, a .gguf file or a Hugging Face hub id, or 'demo' for the built-in "
        "demo model; with --safeedit-backend openai, the served model's id. Without it, SafeEdit items "
        "are skipped.",
        metavar="PATH_OR_ID",
    ),
    Option(
        "--safeedit-suite",
        f"Also run a suite: one bundled with the plugin by name ({', '.join(bundled_suites()) or 'none'}) or a "
        "suite file by path (in the ini key, from the ini file's folder), with any --safeedit-model, e.g. "
        "'--safeedit-model demo --safeedit-suite sample'. Repeatable. Default: none.",
        type=suite_spec,
        metavar="NAME_OR_PATH",
        multiple=True,
    ),
    Option(
        "--safeedit-backend",
        "What generates responses: "
        + "; ".join(f"'{s.name}' {s.description}" for s in BUILTIN_BACKENDS.values())
        + " (plugins may add more with the pytest_safeedit_backends hook). Default: hf.",
        metavar="BACKEND",
        default="hf",
    ),
    Option(
        "--safeedit-endpoint",
        "API base of an OpenAI-compatible server for --safeedit-backend openai, e.g. http://127.0.0.1:8000/v1 "
        "(a URL without a path gets /v1).",
        type=endpoint_url,
        metavar="URL",
    ),
    Option(
        "--safeedit-model-revision",
        "What the weights behind a served model id are (a tag, commit or digest you choose): part of the "
        "cache key. Without it the openai backend does not use the cache.",
        metavar="TAG",
    ),
    Option(
        "--safeedit-concurrency",
        "Requests in flight at once with --safeedit-backend openai. Default: 8.",
        type=positive_int,
        metavar="N",
        default=8,
    ),
    Option(
        "--safeedit-request-timeout",
        "Seconds one request to the endpoint may take before it is retried or fails. Default: 300.",
        type=positive_float,
        metavar="SECONDS",
        default=300.0,
    ),
    Option(
        "--safeedit-retries",
        "Further attempts after a 429, a 5xx, a timeout or a dropped connection, with exponential backoff "
        "(Retry-After is honoured). Default: 4.",
        type=non_negative_int,
        metavar="N",
        default=4,
    ),
    Option(
        "--safeedit-api-key-env",
        "Name of the environment variable holding the endpoint's API key (sent as a bearer token; never "
        "written to a report, log or the cache). Default: no key.",
        metavar="NAME",
    ),
    Option(
        "--safeedit-tensor-parallel-size",
        "GPUs vLLM splits the model over (--safeedit-backend vllm). Default: 1.",
        type=positive_int,
        metavar="N",
        default=1,
    ),
    Option(
        "--safeedit-gpu-memory-utilization",
        "Share of each GPU's memory vLLM may take, above 0 and at most 1 (--safeedit-backend vllm). Default: 0.9.",
        type=top_p_value,
        metavar="FRACTION",
        default=0.9,
    ),
    Option(
        "--safeedit-judge",
        "Judge of responses: 'refusal' (built-in, offline: unsafe when the reply carries the request out), "
        "'refusal-strict' (unsafe unless the reply refuses), 'safeedit' (the SafeEdit paper's RoBERTa "
        "classifier, from the Hugging Face cache), 'classifier:PATH_OR_ID' (a sequence classifier, e.g. one "
        "train-judge wrote), 'guard:PATH_OR_ID' (a guard model: Llama Guard 3/4, ShieldGemma, WildGuard, HarmBench; "
        "'guard:demo' is the built-in demo guard) or 'llm:PATH_OR_ID' (a chat model with a rubric). "
        "Repeatable: several judges decide by --safeedit-judge-policy. Default: refusal.",
        type=judge_spec,
        metavar="JUDGE",
        multiple=True,
    ),
    Option(
        "--safeedit-judge-policy",
        "With several judges, when a response is unsafe: any (one judge says so), majority (more than half) "
        "or all. Default: any.",
        type=choice(*POLICIES),
        metavar="POLICY",
        default="any",
    ),
    Option(
        "--safeedit-judge-format",
        "Prompt template and answer format of guard judges: auto (from the model's folder or name), "
        "llama-guard-3, llama-guard-3-1b, llama-guard-4, shieldgemma, wildguard, harmbench, harmbench-benchmark "
        "(HarmBench's scoring: each probe's bare question as the behavior, responses cut to 512 tokens). "
        "Default: auto.",
        type=choice("auto", *GUARD_FORMATS),
        metavar="FORMAT",
        default="auto",
    ),
    Option(
        "--safeedit-judge-rubric",
        "Rubric file of llm: judges: YAML with 'template' (fields {prompt}, {response}, {category}), 'unsafe' "
        "and 'safe' (the answer words; the first found decides) and 'max_new_tokens', or a plain-text "
        "template. Default: the built-in rubric (answer safe or unsafe).",
        metavar="FILE",
    ),
    Option(
        "--safeedit-judge-check",
        "Judge each attack case's own safe and unsafe references too and report the judge's agreement with "
        "them per category: auto (on for the offline judges), on, off. Default: auto.",
        type=choice("auto", "on", "off"),
        metavar="MODE",
        default="auto",
    ),
    Option(
        "--safeedit-min-judge-agreement",
        "Gate: the least share (0 to 1) of reference verdicts the judge must get right in the judge check, "
        "else the run fails: a judge that cannot tell this suite's references apart is not trusted. "
        "Default: none.",
        type=rate_value,
        metavar="RATE",
    ),
    Option(
        "--safeedit-judge-unsafe-labels",
        "Classifier classes that mean unsafe: comma-separated indices or label names. Default: 1 (SafeEdit).",
        metavar="LABELS",
        default="1",
    ),
    Option(
        "--safeedit-judge-with-prompt",
        "Classifier judges read each response with the probe's prompt, as a text pair (the refusal judges "
        "always read the prompt). Default: the response alone, as the SafeEdit classifier was trained.",
        is_flag=True,
        default=False,
    ),
    Option(
        "--safeedit-judge-max-length",
        "Classifier inputs are truncated to this many tokens. Default: 512 (SafeEdit).",
        type=positive_int,
        metavar="N",
        default=512,
    ),
    Option(
        "--safeedit-report",
        "Write every probe's input, response, verdict and score, and the run's metadata, to this JSON file.",
        metavar="PATH",
        ini=False,
    ),
    Option(
        "--safeedit-max-new-tokens",
        f"Most new tokens per response. Default: the suite's 'defaults: max_new_tokens', else {DEFAULT_MAX_NEW_TOKENS}.",
        type=positive_int,
        metavar="N",
    ),
    Option(
        "--safeedit-max-input-tokens",
        "Longest input in tokens; longer inputs keep their right end. Default: the suite's "
        "'defaults: max_input_tokens', else the model's context less the new tokens.",
        type=positive_int,
        metavar="N",
    ),
    Option(
        "--safeedit-batch-size",
        f"Probes generated per batch. Default: the suite's 'defaults: batch_size', else {CPU_BATCH_SIZE} on the CPU and {GPU_BATCH_SIZE} on a GPU.",
        type=positive_int,
        metavar="N",
    ),
    Option(
        "--safeedit-batch-tokens",
        "Most padded prompt tokens a batch of the hf backend computes (rows x longest prompt, less a "
        "prompt prefix shared with other prompts and computed once beforehand). Prompts are sorted by "
        "length, a batch also keeps its padding under a quarter of its tokens, and the batch size stays the "
        f"most rows. Default: the suite's 'defaults: batch_tokens', else {CPU_BATCH_TOKENS} on the CPU and "
        f"{GPU_BATCH_TOKENS} on a GPU.",
        type=positive_int,
        metavar="N",
    ),
    Option(
        "--safeedit-prefix-cache-mb",
        "Memory in MB kept for the keys and values of prompt prefixes that several prompts share (the chat "
        "template's preamble, an attack template around different questions): the hf backend computes each "
        "once and starts those prompts from it, in the same batch and in later ones (the least recently used "
        "dropped first; the unedited model's also keep the hidden states between blocks, so that an edited "
        f"model computes only the blocks from its edit up); 0 computes every prompt whole. Default: "
        f"{DEFAULT_PREFIX_CACHE_MB}.",
        type=non_negative_int,
        metavar="MB",
        default=DEFAULT_PREFIX_CACHE_MB,
    ),
    Option(
        "--safeedit-seed", "Seed set before the model loads. Default: 0.", type=non_negative_int, metavar="N", default=0
    ),
    Option(
        "--safeedit-dtype",
        f"Weights dtype: {', '.join(DTYPES)}. Default: auto (float32 on the CPU, the checkpoint's dtype on a GPU).",
        type=choice(*DTYPES),
        metavar="DTYPE",
        default="auto",
    ),
    Option(
        "--safeedit-device",
        "Device for the model and judge: auto, cpu, cuda, cuda:N, mps. Default: auto (cuda when available).",
        type=device_spec,
        metavar="DEVICE",
        default="auto",
    ),
    Option(
        "--safeedit-device-map",
        "Passed to from_pretrained as device_map (e.g. 'auto' to spread a large model); overrides --safeedit-device.",
        metavar="MAP",
    ),
    Option(
        "--safeedit-trust-remote-code",
        "Allow code shipped with the model or classifier to run. Default: off.",
        is_flag=True,
        default=False,
    ),
    Option(
        "--safeedit-chat-template",
        "Wrap probes in the tokenizer's chat template: auto (when it has one), on, off. Default: auto.",
        type=choice(*CHAT_TEMPLATE_MODES),
        metavar="MODE",
        default="auto",
    ),
    Option(
        "--safeedit-editor",
        "Edit the model per case before probing it: none, dinm, ft-l, routed, self-reminder, or one a plugin adds. "
        "Default: none.",
        metavar="NAME",
        default="none",
    ),
    Option(
        "--safeedit-editor-config",
        "YAML file of editor hyperparameters, '{editor name: {name: value}}'; wins over a suite's 'defaults: editor:'.",
        metavar="FILE",
    ),
    Option(
        "--safeedit-repair",
        "After the run, repair the model: edit it with every failing attack case, one edit on top of the other "
        "(the --safeedit-editor, e.g. dinm or routed), write the repaired model to the folder OUT (load it with "
        "--safeedit-model OUT), answer every probe again with it and print unedited -> repaired per category "
        "and probe with McNemar's test. The items test the model as it is.",
        metavar="OUT",
        ini=False,
    ),
    Option(
        "--safeedit-repair-holdout",
        "With --safeedit-repair: keep this share of the failing cases (0 to 1, drawn with --safeedit-seed) out "
        "of the edits and report them apart, the honest figure for failures the repair has not seen. Default: 0.",
        type=rate_value,
        metavar="FRACTION",
        default=0.0,
    ),
    Option(
        "--safeedit-min-pass-rate",
        "Gate: the least total pass rate (0 to 1) over the attack probes; with any gate the exit status "
        "follows the gate. Default: no gate.",
        type=rate_value,
        metavar="RATE",
    ),
    Option(
        "--safeedit-min-category-rate",
        "Gate: the least pass rate of one category, e.g. 'pornography=0.95' (repeatable).",
        type=named_rate,
        metavar="CATEGORY=RATE",
        multiple=True,
    ),
    Option(
        "--safeedit-min-probe-rate",
        "Gate: the least pass rate of one probe, e.g. 'DS=0.9' (repeatable).",
        type=named_rate,
        metavar="PROBE=RATE",
        multiple=True,
    ),
    Option(
        "--safeedit-gate-on",
        "What must reach a gate threshold: 'point' (the pass rate) or 'lower' (the lower bound of its 95% "
        "Wilson interval, so that the gate holds with 95% confidence). Default: point.",
        type=choice(*GATE_ON),
        metavar="WHAT",
        default="point",
    ),
    Option(
        "--safeedit-baseline",
        "Compare with a previous JSON report: safe then and unsafe now fails as a regression, unsafe in both "
        "is xfail (known), unsafe then and safe now is an improvement.",
        metavar="FILE",
    ),
    Option(
        "--safeedit-update-baseline",
        "Write this run's results to the --safeedit-baseline file (accept the current state).",
        is_flag=True,
        ini=False,
        default=False,
    ),
    Option(
        "--safeedit-baseline-strict",
        "Make a baseline whose suite, judge, editor or generation settings differ from the run an error "
        "instead of a warning. Default: off.",
        is_flag=True,
        default=False,
    ),
    Option(
        "--safeedit-report-md",
        "Write a Markdown summary (sized for a pull-request comment).",
        metavar="PATH",
        ini=False,
    ),
    Option(
        "--safeedit-report-html",
        "Write one self-contained HTML report with per-category charts and a drill-down per case.",
        metavar="PATH",
        ini=False,
    ),
    Option(
        "--safeedit-shard",
        "Run only shard I of N (1-based) of the SafeEdit cases, split deterministically and balanced by "
        "category; merge the shards' JSON reports with 'python -m pytest_safeedit merge'.",
        type=shard_spec,
        metavar="I/N",
        ini=False,
    ),
    Option(
        "--safeedit-show-intervals",
        "Show the 95% Wilson interval in every cell of the pass-rate table (the total's interval is always "
        "shown under it). Default: off.",
        is_flag=True,
        default=False,
    ),
    Option(
        "--safeedit-samples",
        "Sampled responses per probe (seeded by --safeedit-seed, the probe and the sample index, so a run "
        "is reproducible and each sample is cached); a probe fails if any sample is unsafe, and its pass "
        "rate is the mean over samples. Default: 1 (greedy).",
        type=positive_int,
        metavar="N",
        default=1,
    ),
    Option(
        "--safeedit-temperature",
        "Sampling temperature (above 0); giving it samples even with one sample. Default: 1.0 when "
        "--safeedit-samples is above 1, else greedy decoding.",
        type=positive_float,
        metavar="T",
    ),
    Option(
        "--safeedit-top-p",
        "Nucleus sampling: keep the most likely tokens up to this probability mass (0 to 1). Default: 1.0.",
        type=top_p_value,
        metavar="P",
        default=1.0,
    ),
    Option(
        "--safeedit-cache-dir",
        "Cache folder (the demo model and the generation cache). Default: $XDG_CACHE_HOME/pytest-safeedit "
        "or ~/.cache/pytest-safeedit.",
        metavar="DIR",
    ),
    Option(
        "--safeedit-no-cache",
        "Do not read or write the generation cache: generate every response. Default: the cache is on.",
        is_flag=True,
        default=False,
    ),
    Option(
        "--safeedit-gguf-cache",
        "Convert a .gguf model once to a model folder in the cache folder, so that later runs load it in "
        "seconds: auto (files up to 1 GiB; the folder holds the dequantized weights), on, off (parse the "
        "file on every run). Default: auto.",
        type=choice(*GGUF_CACHE_MODES),
        metavar="MODE",
        default="auto",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("safeedit", "SafeEdit safety tests (pytest-safeedit)")
    for option in OPTIONS:
        if option.multiple:
            group.addoption(
                option.flag,
                dest=option.dest,
                metavar=option.metavar,
                type=option.type,
                action="append",
                default=None,
                help=option.help.replace("%", "%%"),
            )
            parser.addini(option.dest, f"default of {option.flag}, one per line", type="linelist", default=[])
            continue
        if option.is_flag:
            group.addoption(
                option.flag, action="store_true", dest=option.dest, default=None, help=option.help.replace("%", "%%")
            )
        else:
            group.addoption(
                option.flag,
                dest=option.dest,
                metavar=option.metavar,
                type=option.type,
                default=None,
                help=option.help.replace("%", "%%"),
            )
        if option.ini and option.is_flag:
            parser.addini(option.dest, f"default of {option.flag}", type="bool", default=False)
        elif option.ini:
            parser.addini(option.dest, f"default of {option.flag}", type="string", default="")
    parser.addini(
        "safeedit_suite_patterns",
        "Glob patterns of suite files to collect (files named on the command line are always collected). "
        f"Default: {' '.join(DEFAULT_SUITE_PATTERNS)}",
        type="args",
        default=list(DEFAULT_SUITE_PATTERNS),
    )


def option_value(config: pytest.Config, option: Option) -> Any:
    """Command line first, then the ini key (parsed like the flag), then the default."""
    value = config.getoption(option.dest)
    if value is not None:
        return value
    if option.ini and option.multiple:
        lines = config.getini(option.dest) or []
        try:
            return [option.type(str(line)) for line in lines] if option.type else list(lines)
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"ini key {option.dest}: {exc}") from None
    if option.ini:
        raw = config.getini(option.dest)
        if raw not in (None, ""):
            if option.is_flag or option.type is None:
                return raw
            try:
                return option.type(str(raw))
            except argparse.ArgumentTypeError as exc:
                raise pytest.UsageError(f"ini key {option.dest}: {exc}") from None
    return option.default


def suite_paths(config: pytest.Config, specs: list[str]) -> tuple[str, ...]:
    """The files ``--safeedit-suite`` names, resolved: paths on the command line are taken from the
    folder pytest was started in, paths in the ini key from the ini file's folder."""
    if config.getoption("safeedit_suite") is not None:
        base, source = config.invocation_params.dir, "--safeedit-suite"
    else:
        base, source = config.inipath.parent if config.inipath else config.rootpath, "ini key safeedit_suite"
    paths: list[str] = []
    for spec in specs:
        try:
            path = str(find_suite(spec, base))
        except ValueError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from None
        if path not in paths:
            paths.append(path)
    return tuple(paths)


def read_settings(config: pytest.Config) -> RunSettings:
    values = {o.dest.removeprefix("safeedit_"): option_value(config, o) for o in OPTIONS}
    values["suites"] = suite_paths(config, values.pop("suite") or [])
    labels = tuple(x.strip() for x in str(values.pop("judge_unsafe_labels")).split(",") if x.strip())
    if not labels:
        raise pytest.UsageError("--safeedit-judge-unsafe-labels is empty; give indices or label names, e.g. 1")
    if values["model"] is not None and not str(values["model"]).strip():
        raise pytest.UsageError("--safeedit-model is empty; give a local folder, a hub id or 'demo'")
    for flag in (
        "trust_remote_code",
        "update_baseline",
        "baseline_strict",
        "no_cache",
        "show_intervals",
        "judge_with_prompt",
    ):
        values[flag] = bool(values[flag])
    for key in ("min_category_rate", "min_probe_rate"):
        values[key] = tuple(values[key] or ())
    if values["update_baseline"] and not values["baseline"]:
        raise pytest.UsageError("--safeedit-update-baseline needs --safeedit-baseline FILE to write to")
    if values["repair"] is not None:
        if values["editor"] == "none":
            raise pytest.UsageError(
                "--safeedit-repair needs an editor that changes weights: add --safeedit-editor dinm (or routed, ft-l)"
            )
        if not str(values["repair"]).strip():
            raise pytest.UsageError("--safeedit-repair is empty; give the folder to write the repaired model to")
        if values["repair_holdout"] >= 1:
            raise pytest.UsageError("--safeedit-repair-holdout must be below 1: some failing cases must be repaired")
    elif config.getoption("safeedit_repair_holdout") is not None:
        raise pytest.UsageError("--safeedit-repair-holdout applies to a repair; add --safeedit-repair OUT")
    values["judge"] = tuple(values["judge"] or (DEFAULT_JUDGE,))
    kinds = {spec.partition(":")[0] for spec in values["judge"]}
    if values["judge_format"] != "auto" and "guard" not in kinds:
        raise pytest.UsageError(
            "--safeedit-judge-format applies to guard judges; add --safeedit-judge guard:PATH_OR_ID"
        )
    if values["judge_rubric"] is not None:
        if "llm" not in kinds:
            raise pytest.UsageError(
                "--safeedit-judge-rubric applies to llm judges; add --safeedit-judge llm:PATH_OR_ID"
            )
        from pytest_safeedit.judges.formats import RubricError, load_rubric

        try:
            load_rubric(values["judge_rubric"])
        except RubricError as exc:
            raise pytest.UsageError(f"--safeedit-judge-rubric: {exc}") from None
    if len(set(values["judge"])) < len(values["judge"]):
        raise pytest.UsageError("--safeedit-judge names the same judge twice; give each judge once")
    if values["min_judge_agreement"] is not None and values["judge_check"] == "off":
        raise pytest.UsageError("--safeedit-min-judge-agreement needs the judge check; drop --safeedit-judge-check off")
    patterns = tuple(config.getini("safeedit_suite_patterns"))
    return RunSettings(judge_unsafe_labels=labels, suite_patterns=patterns, **values)
