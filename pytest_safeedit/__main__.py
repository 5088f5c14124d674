"""Command line: ``python -m pytest_safeedit merge REPORT...``."""

from __future__ import annotations

import sys

USAGE = "usage: python -m pytest_safeedit merge REPORT... [--min-pass-rate RATE] [--report PATH] ..."


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "merge":
        print(USAGE, file=sys.stderr)
        return 2
    from pytest_safeedit.merge import main as merge

    return merge(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
