"""Command line: ``python -m pytest_safeedit merge REPORT...``, ``judge-eval FILE...``, ``train-judge FILE...``
and ``tune``."""

from __future__ import annotations

import sys

USAGE = (
    "usage: python -m pytest_safeedit merge REPORT... [--min-pass-rate RATE] [--report PATH] ...\n"
    "       python -m pytest_safeedit judge-eval FILE... [--judge JUDGE] [--group-by attack] [--split SPLIT] ...\n"
    "       python -m pytest_safeedit train-judge FILE... --encoder PATH_OR_ID --out DIR [--holdout-by attack] ...\n"
    "       python -m pytest_safeedit tune --model MODEL [--editor dinm] [--lr 1e-4,5e-4] [--steps 10,20] ..."
)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "merge":
        from pytest_safeedit.cli.merge import main as merge

        return merge(argv[1:])
    if argv and argv[0] == "judge-eval":
        from pytest_safeedit.cli.judge_eval import main as judge_eval

        return judge_eval(argv[1:])
    if argv and argv[0] == "train-judge":
        from pytest_safeedit.cli.train_judge import main as train_judge

        return train_judge(argv[1:])
    if argv and argv[0] == "tune":
        from pytest_safeedit.cli.tune import main as tune

        return tune(argv[1:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
