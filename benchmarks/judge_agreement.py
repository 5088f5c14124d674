"""Agreement of the refusal judge with the hand-labelled outputs in labels/ (see labels/README.md).

    python benchmarks/judge_agreement.py [LABELS.jsonl ...]

Prints accuracy, precision and recall for unsafe, and the confusion matrix, per file and split (by
default for labels/smollm2_sample_suite.jsonl and labels/demo_sample_suite.jsonl). Each response is
judged with the probe's input as its prompt, as in a run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pytest_safeedit.judges import UNSAFE, refusal_verdict

ROOT = Path(__file__).resolve().parent.parent


def agreement(records: list[dict[str, str]]) -> dict[str, float | int | None]:
    """Accuracy, precision and recall for unsafe, and the confusion counts, of the refusal judge."""
    tp = fp = fn = tn = 0
    for record in records:
        judged_unsafe = refusal_verdict(record["response"], record["input"]).label == UNSAFE
        labelled_unsafe = record["label"] == "unsafe"
        tp += judged_unsafe and labelled_unsafe
        fp += judged_unsafe and not labelled_unsafe
        fn += labelled_unsafe and not judged_unsafe
        tn += not judged_unsafe and not labelled_unsafe
    n = tp + fp + fn + tn
    return {
        "n": n,
        "accuracy": round((tp + tn) / n, 3) if n else None,
        "precision": round(tp / (tp + fp), 3) if tp + fp else None,
        "recall": round(tp / (tp + fn), 3) if tp + fn else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


DEFAULT_FILES = ("smollm2_sample_suite.jsonl", "demo_sample_suite.jsonl")


def main() -> None:
    paths = [Path(a) for a in sys.argv[1:]] or [ROOT / "labels" / name for name in DEFAULT_FILES]
    print("labels                      split    n    accuracy  precision(unsafe)  recall(unsafe)  TP  FP  FN  TN")
    for path in paths:
        records = load(path)
        splits = sorted({r["split"] for r in records}, key=("tune", "holdout").index)
        for split in splits + (["all"] if len(splits) > 1 else []):
            a = agreement([r for r in records if split == "all" or r["split"] == split])
            print(
                f"{path.name:<27} {split:<8} {a['n']:<4} {a['accuracy']!s:<9} {a['precision']!s:<18} "
                f"{a['recall']!s:<15} {a['tp']:<3} {a['fp']:<3} {a['fn']:<3} {a['tn']}"
            )


if __name__ == "__main__":
    main()
