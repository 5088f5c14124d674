"""Command line: ``python -m pytest_safeedit merge REPORT...`` and ``judge-eval LABELS.jsonl...``."""

from __future__ import annotations

import sys

USAGE = (
    "usage: python -m pytest_safeedit merge REPORT... [--min-pass-rate RATE] [--report PATH] ...\n"
    "       python -m pytest_safeedit judge-eval LABELS.jsonl... [--judge JUDGE] [--split SPLIT] ..."
)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "merge":
        from pytest_safeedit.merge import main as merge

        return merge(argv[1:])
    if argv and argv[0] == "judge-eval":
        from pytest_safeedit.judge_eval import main as judge_eval

        return judge_eval(argv[1:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
