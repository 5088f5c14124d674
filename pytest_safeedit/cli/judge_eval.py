"""``python -m pytest_safeedit judge-eval FILE...``: a judge against labelled responses.

A file is a labels file (one JSON object per line with ``response`` and ``label``, ``safe`` or
``unsafe``, and optionally ``input``, the prompt the response answers, given to the judge; ``category``,
``attack``, ``source``, ``model``, ``split``), the benchmark's official JSON (each record's safe reference
should be judged safe and its unsafe one unsafe, read with the record's adversarial prompt) or a YAML
suite (its attack cases' references). Prints accuracy, precision, recall and F1 for unsafe, the share of
safe responses judged safe, Cohen's kappa and the confusion matrix, overall and per group
(``--group-by attack|category|source|model``), and lists the disagreements.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_safeedit.config.settings import DEFAULT_JUDGE
from pytest_safeedit.judges.base import POLICIES, UNPARSED, UNSAFE, Judge, PanelJudge, Verdict, ask
from pytest_safeedit.judges.formats import GUARD_FORMATS
from pytest_safeedit.judges.labelled import GROUPS, Example, LabelsError, load_examples
from pytest_safeedit.judges.registry import JudgeOptions, build_judge


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
    def specificity(self) -> float | None:
        """The share of safe responses judged safe."""
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else None

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
        for name in ("accuracy", "precision", "recall", "specificity", "f1", "kappa"):
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


def judge_examples(examples: Sequence[Example], judge: Judge) -> list[Verdict]:
    """The judge's verdicts on labelled responses, read with their prompts and categories (and bare
    questions, for a judge that reads them: the prompt where a label gives none)."""
    return ask(
        judge,
        [e.response for e in examples],
        [e.prompt for e in examples],
        [e.category for e in examples],
        [e.question or e.prompt for e in examples],
    )


def judged_unsafe(verdicts: Sequence[Verdict], examples: Sequence[Example]) -> list[bool]:
    """Whether each response was judged unsafe; an answer that could not be read counts as the judge's
    error, whatever the label."""
    return [v.label == UNSAFE if v.label != UNPARSED else not e.unsafe for v, e in zip(verdicts, examples)]


def group_members(examples: Sequence[Example], keys: Sequence[str]) -> dict[str, list[int]]:
    """The indices of all examples (``all``), then of each group of each key (``attack=NAME``), sorted."""
    out: dict[str, list[int]] = {"all": list(range(len(examples)))}
    for key in dict.fromkeys(keys):
        members: dict[str, list[int]] = {}
        for i, example in enumerate(examples):
            members.setdefault(f"{key}={example.group(key)}", []).append(i)
        out.update(sorted(members.items()))
    return out


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


HEADERS = ["data", "group", "judge", "n", "accuracy", "precision", "recall", "safe kept", "F1", "kappa"]
HEADERS += ["TP", "FP", "FN", "TN", "unparsed"]


def _row(data: str, group: str, spec: str, a: Agreement, unread: int) -> list[Any]:
    kappa = "-" if a.kappa is None else f"{a.kappa:.3f}"
    figures = [percent(x) for x in (a.accuracy, a.precision, a.recall, a.specificity, a.f1)]
    return [data, group, spec, a.n, *figures, kappa, a.tp, a.fp, a.fn, a.tn, unread]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_safeedit judge-eval",
        description="A judge against labelled responses (label files, the benchmark's official JSON, YAML "
        "suites): accuracy, precision, recall, safe kept, F1, Cohen's kappa and the confusion matrix, overall "
        "and per group, and the disagreements.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="labels (.jsonl), official SafeEdit JSON or a suite")
    parser.add_argument(
        "--judge",
        action="append",
        default=None,
        help="refusal (default), refusal-strict, safeedit, classifier:PATH_OR_ID, guard:PATH_OR_ID (guard:demo: "
        "the demo guard) or llm:PATH_OR_ID; repeatable (each is evaluated on its own)",
    )
    parser.add_argument(
        "--judge-format",
        default="auto",
        choices=("auto", *GUARD_FORMATS),
        help="guard judges' format (harmbench-benchmark reads each record's bare question: the official JSON's "
        "and suites' question, a label file's optional 'question', else the prompt)",
    )
    parser.add_argument("--judge-rubric", metavar="FILE", help="rubric file of llm: judges (default: built-in)")
    parser.add_argument("--split", help="only records whose 'split' is this (e.g. holdout)")
    parser.add_argument(
        "--group-by",
        action="append",
        choices=GROUPS,
        default=[],
        help="also report per attack template, category, source or model (repeatable)",
    )
    parser.add_argument(
        "--panel",
        choices=POLICIES,
        help="also evaluate the --judge judges together as one panel with this policy (any, majority, all)",
    )
    parser.add_argument("--pool", action="store_true", help="one row over all files together instead of one per file")
    parser.add_argument("--judge-unsafe-labels", default="1", help="classifier classes that mean unsafe (default 1)")
    parser.add_argument("--judge-max-length", type=int, default=512, help="classifier input limit (default 512)")
    parser.add_argument("--device", default="cpu", help="torch device of model judges (default cpu)")
    parser.add_argument("--dtype", default="auto", help="guard and llm judges' dtype (default: float32 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=8, help="guard and llm judges' checks per pass (default 8)")
    parser.add_argument("--cache-dir", help="where the demo guard is built (default: the plugin's cache)")
    parser.add_argument("--disagreements", type=int, default=10, metavar="N", help="list at most N (default 10)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return parser


class _UsageError(Exception):
    """What judge-eval cannot go on with: said on stderr, exit status 2."""


def _options(args: argparse.Namespace) -> JudgeOptions:
    return JudgeOptions(
        unsafe_labels=tuple(x.strip() for x in args.judge_unsafe_labels.split(",") if x.strip()),
        max_length=args.judge_max_length,
        guard_format=args.judge_format,
        rubric=args.judge_rubric,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
    )


def _load(files: Sequence[str], split: str | None, pool: bool) -> dict[str, list[Example]]:
    """The examples of each file (of ``split`` only where given), by a display name; pooled into one."""
    data: dict[str, list[Example]] = {}
    names = [Path(p).name for p in files]
    try:
        for path in files:
            examples = [e for e in load_examples(path) if not split or e.split == split]
            # Files are named by their file name, or by the path given where two share a name.
            named = Path(path).name if names.count(Path(path).name) == 1 else str(path)
            if examples:
                data.setdefault(named + (f" [{split}]" if split else ""), []).extend(examples)
    except LabelsError as exc:
        raise _UsageError(str(exc)) from None
    if not data:
        raise _UsageError(f"no records with split {split!r} in {', '.join(files)}")
    if pool:
        data = {" + ".join(data): [e for examples in data.values() for e in examples]}
    return data


def _judges(specs: Sequence[str], options: JudgeOptions, panel: str | None) -> dict[str, Judge]:
    """Each judge by its spec (the built-in demos' folders resolved), and their panel where asked."""
    from pytest_safeedit.demo.guard import with_demo_judges

    try:
        options = with_demo_judges(specs, options)
        judges = {spec: build_judge(spec, options) for spec in specs}
    except (ValueError, OSError) as exc:
        raise _UsageError(str(exc)) from None
    if panel:
        together = PanelJudge([judges[s] for s in specs], panel)
        judges[together.name] = together
    return judges


@dataclass
class _Tally:
    """What the evaluation prints and writes: figures by key, table rows, disagreements."""

    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[list[Any]] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)


def _evaluate(
    tally: _Tally, name: str, spec: str, judge: Judge, examples: list[Example], args: argparse.Namespace
) -> None:
    verdicts = judge_examples(examples, judge)
    judged = judged_unsafe(verdicts, examples)
    for group, indices in group_members(examples, args.group_by).items():
        a = agreement([judged[i] for i in indices], [examples[i].unsafe for i in indices])
        unread = sum(verdicts[i].label == UNPARSED for i in indices)
        key = f"{name} / {spec}" + ("" if group == "all" else f" / {group}")
        tally.figures[key] = {**a.to_dict(), "unparsed": unread}
        tally.rows.append(_row(name, group, spec, a, unread))
    wrong = [(e, v) for e, v, j in zip(examples, verdicts, judged) if j != e.unsafe]
    for example, verdict in wrong[: args.disagreements]:
        text = " ".join(example.response.split())[:100]
        reason = verdict.reason.removeprefix(f"{judge.name}: ")
        tally.listed.append(
            f"{name} / {spec}: {example.where}: labelled {example.label}, judged {verdict.label} "
            f"({reason[:60]}): {text!r}"
        )
    if len(wrong) > args.disagreements:
        tally.listed.append(f"{name} / {spec}: ... and {len(wrong) - args.disagreements} more")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        data = _load(args.files, args.split, args.pool)
        judges = _judges(list(dict.fromkeys(args.judge or [DEFAULT_JUDGE])), _options(args), args.panel)
    except _UsageError as exc:
        print(f"judge-eval: error: {exc}", file=sys.stderr)
        return 2
    tally = _Tally()
    for spec, judge in judges.items():
        for name, examples in data.items():
            _evaluate(tally, name, spec, judge, examples, args)
    from tabulate import tabulate

    print(tabulate(tally.rows, headers=HEADERS, tablefmt="simple", disable_numparse=True))
    print(
        "(unsafe is the positive class: precision and recall are for unsafe, 'safe kept' is the share of safe "
        "responses judged safe; an unparsed answer counts as an error)"
    )
    if tally.listed:
        print("\ndisagreements:")
        print("\n".join(f"  {line}" for line in tally.listed))
    if args.json:
        Path(args.json).write_text(json.dumps(tally.figures, indent=1), encoding="utf-8")
    return 0
