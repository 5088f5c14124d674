"""``python -m pytest_safeedit judge-eval LABELS.jsonl``: a judge against human labels.

A labels file holds one JSON object per line with ``response`` and ``label`` (``safe`` or
``unsafe``), and optionally ``input`` (the prompt the response answers; given to the judge) and
``split``. Prints accuracy, precision, recall and F1 for unsafe, Cohen's kappa and the confusion
matrix, and lists the disagreements.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_safeedit.guard_formats import GUARD_FORMATS
from pytest_safeedit.judge_specs import JudgeOptions, build_judge
from pytest_safeedit.judges import UNPARSED, UNSAFE, Judge, Verdict


class LabelsError(Exception):
    """A labels file that cannot be read; the message names the file, line and field."""


@dataclass(frozen=True)
class Agreement:
    """A judge's verdicts against human labels, with unsafe as the positive class."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p is not None and r is not None and p + r else None

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa: agreement beyond what the two sides' label rates give by chance."""
        if not self.n:
            return None
        observed = (self.tp + self.tn) / self.n
        judged_unsafe, labelled_unsafe = (self.tp + self.fp) / self.n, (self.tp + self.fn) / self.n
        chance = judged_unsafe * labelled_unsafe + (1 - judged_unsafe) * (1 - labelled_unsafe)
        return (observed - chance) / (1 - chance) if chance < 1 else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, **asdict(self)}
        for name in ("accuracy", "precision", "recall", "f1", "kappa"):
            value = getattr(self, name)
            out[name] = None if value is None else round(value, 4)
        return out


def agreement(judged_unsafe: Sequence[bool], labelled_unsafe: Sequence[bool]) -> Agreement:
    pairs = list(zip(judged_unsafe, labelled_unsafe, strict=True))
    return Agreement(
        tp=sum(j and lab for j, lab in pairs),
        fp=sum(j and not lab for j, lab in pairs),
        fn=sum(lab and not j for j, lab in pairs),
        tn=sum(not j and not lab for j, lab in pairs),
    )


def load_labels(path: str | Path) -> list[dict[str, Any]]:
    """The records of a labels file, checked: each has a string ``response`` and a ``label`` of safe or
    unsafe."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LabelsError(f"cannot read {path}: {exc.strerror or exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelsError(f"{path}:{number}: not JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("response"), str):
            raise LabelsError(f"{path}:{number}: needs a string 'response'")
        if record.get("label") not in ("safe", "unsafe"):
            raise LabelsError(f"{path}:{number}: 'label' must be 'safe' or 'unsafe', got {record.get('label')!r}")
        records.append(record)
    if not records:
        raise LabelsError(f"{path}: no records")
    return records


def judge_records(records: Sequence[dict[str, Any]], judge: Judge) -> list[Verdict]:
    """The judge's verdicts on the labelled responses, read with their inputs and categories."""
    return judge.judge(
        [r["response"] for r in records],
        [str(r.get("input", "")) for r in records],
        [str(r.get("category", "")) for r in records],
    )


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_safeedit judge-eval",
        description="A judge against human labels: accuracy, precision, recall, F1, Cohen's kappa, confusion "
        "matrix and the disagreements.",
    )
    parser.add_argument("labels", nargs="+", metavar="LABELS.jsonl")
    parser.add_argument(
        "--judge",
        action="append",
        default=None,
        help="refusal (default), refusal-strict, classifier:PATH_OR_ID, guard:PATH_OR_ID (guard:demo: the demo "
        "guard) or llm:PATH_OR_ID; repeatable (each is evaluated on its own)",
    )
    parser.add_argument("--judge-format", default="auto", choices=("auto", *GUARD_FORMATS), help="guard judges' format")
    parser.add_argument("--judge-rubric", metavar="FILE", help="rubric file of llm: judges (default: built-in)")
    parser.add_argument("--split", help="only records whose 'split' is this (e.g. holdout)")
    parser.add_argument("--judge-unsafe-labels", default="1", help="classifier classes that mean unsafe")
    parser.add_argument("--judge-max-length", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="guard and llm judges' dtype (default: float32 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=8, help="guard and llm judges' checks per pass")
    parser.add_argument("--cache-dir", help="where the demo guard is built (default: the plugin's cache)")
    parser.add_argument("--disagreements", type=int, default=10, metavar="N", help="list at most N (default 10)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    options = JudgeOptions(
        unsafe_labels=tuple(x.strip() for x in args.judge_unsafe_labels.split(",") if x.strip()),
        max_length=args.judge_max_length,
        guard_format=args.judge_format,
        rubric=args.judge_rubric,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
    )
    judges: dict[str, Judge] = {}
    figures: dict[str, dict[str, Any]] = {}
    rows = []
    listed: list[str] = []
    for path in args.labels:
        try:
            records = load_labels(path)
        except LabelsError as exc:
            print(f"judge-eval: error: {exc}", file=sys.stderr)
            return 2
        if args.split:
            records = [r for r in records if r.get("split") == args.split]
        labelled = [r["label"] == UNSAFE for r in records]
        for spec in args.judge or ["refusal"]:
            try:
                if spec not in judges:
                    judges[spec] = build_judge(spec, options)
                verdicts = judge_records(records, judges[spec])
            except (ValueError, OSError) as exc:
                print(f"judge-eval: error: {exc}", file=sys.stderr)
                return 2
            # An answer that could not be read is an error of the judge, whatever the label.
            judged = [v.label == UNSAFE if v.label != UNPARSED else not lab for v, lab in zip(verdicts, labelled)]
            unread = sum(v.label == UNPARSED for v in verdicts)
            a = agreement(judged, labelled)
            name = Path(path).name + (f" [{args.split}]" if args.split else "")
            figures[f"{name} / {spec}"] = {**a.to_dict(), "unparsed": unread}
            rows.append(
                [name, spec, a.n, percent(a.accuracy), percent(a.precision), percent(a.recall), percent(a.f1),
                 "-" if a.kappa is None else f"{a.kappa:.3f}", a.tp, a.fp, a.fn, a.tn, unread]
            )  # fmt: skip
            wrong = [(r, v) for r, v, j, lab in zip(records, verdicts, judged, labelled) if j != lab]
            for record, verdict in wrong[: args.disagreements]:
                text = " ".join(record["response"].split())[:100]
                reason = verdict.reason.removeprefix(f"{judges[spec].name}: ")
                listed.append(
                    f"{name} / {spec}: labelled {record['label']}, judged {verdict.label} ({reason[:60]}): {text!r}"
                )
            if len(wrong) > args.disagreements:
                listed.append(f"{name} / {spec}: ... and {len(wrong) - args.disagreements} more")
    from tabulate import tabulate

    headers = [
        "labels",
        "judge",
        "n",
        "accuracy",
        "precision",
        "recall",
        "F1",
        "kappa",
        "TP",
        "FP",
        "FN",
        "TN",
        "unparsed",
    ]
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    print("(unsafe is the positive class: precision and recall are for unsafe; an unparsed answer counts as an error)")
    if listed:
        print("\ndisagreements:")
        print("\n".join(f"  {line}" for line in listed))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0
