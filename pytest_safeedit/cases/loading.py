"""Suite files: which files are suites (patterns, content sniffing, the bundled suites) and loading them."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path, PurePosixPath

from pytest_safeedit.cases.model import Suite, SuiteError

SUITE_SUFFIXES = (".yaml", ".yml", ".json")
_TOP_LEVEL_CASES = re.compile(r"(?m)^cases\s*:")
_OFFICIAL_RECORD = re.compile(r'^\s*\[\s*\{[^{}]*?"(?:adversarial prompt|unsafety category)"\s*:', re.S)
#: Fields of a hand-written case that say a file is meant as a suite whatever its shape.
CASE_FIELDS = frozenset({"question", "attack", "category", "safe", "unsafe", "other_question", "other_attack"})
_YAML_KEY = re.compile(r"(?m)^[ \t]*(?:-[ \t]+)?([A-Za-z_]+)[ \t]*:")
_JSON_KEY = re.compile(r'"([A-Za-z_]+)"\s*:')


def load_suite(path: Path, key: str | None = None) -> Suite:
    """Load a YAML suite or a file in the benchmark's official JSON format.

    ``key`` names the suite uniquely in a run (the plugin passes the file's path from the rootdir); by
    default it is the suite's name.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(path, f"cannot read the file ({exc}); check that it is a UTF-8 text file") from exc
    if path.suffix == ".json":
        from pytest_safeedit.cases.official import load_official

        suite = load_official(path, text)
    else:
        from pytest_safeedit.cases.yaml_format import load_yaml_suite

        suite = load_yaml_suite(path, text)
    return suite.with_key(key or suite.name)


@lru_cache(maxsize=1)
def bundled_suites() -> dict[str, Path]:
    """The suites that ship with the plugin, by name (the file name without its suffix).

    They lie in ``pytest_safeedit/suites`` of an installed wheel, and in the project's ``suites/`` folder
    of a source checkout or editable install (pyproject maps the one to the other).
    """
    package = Path(__file__).resolve().parents[1]
    folder = package / "suites"
    if not folder.is_dir():
        folder = package.parent / "suites"
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in SUITE_SUFFIXES and p.is_file()}


def find_suite(spec: str, base: Path) -> Path:
    """The file a ``--safeedit-suite`` value names: a bundled suite's name (``sample``), or the path of a
    suite file, relative to ``base``.

    Raises:
        ValueError: no such bundled suite or file, or a file that is not a suite file; the message lists
            the bundled suites.
    """
    bundled = bundled_suites()
    names = ", ".join(bundled) or "none"
    if "/" not in spec and os.sep not in spec and Path(spec).suffix not in SUITE_SUFFIXES:
        if spec in bundled:
            return bundled[spec]
        raise ValueError(
            f"{spec!r} is not a bundled suite; the bundled suites are: {names} (or give a suite file's path, "
            "e.g. suites/mine.yaml)"
        )
    path = (base / spec).resolve()
    if path.suffix not in SUITE_SUFFIXES:
        raise ValueError(f"{spec!r} is not a suite file; give a file ending in {', '.join(SUITE_SUFFIXES)}")
    if not path.is_file():
        raise ValueError(f"{spec!r}: no such file; give a suite file's path or a bundled suite's name ({names})")
    return path


@lru_cache(maxsize=64)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regular expression over a whole relative path: ``*`` and ``?`` stay inside one
    folder, ``**/`` spans any number of folders."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches_pattern(relative: str, pattern: str) -> bool:
    """Whether a path from the rootdir matches a suite pattern.

    A pattern with a ``/`` is anchored at the rootdir (``suites/*.yaml`` is ``<rootdir>/suites/x.yaml``
    and nothing deeper); a pattern without one matches the file name in any folder.
    """
    target = relative if "/" in pattern else PurePosixPath(relative).name
    return _pattern_regex(pattern).match(target) is not None


def is_generic(pattern: str) -> bool:
    """A pattern whose file-name part says nothing about SafeEdit (``*.yaml``): files it matches are
    collected only when their content is a suite."""
    return re.fullmatch(r"\*\.[A-Za-z0-9]+", PurePosixPath(pattern).name) is not None


def looks_like_suite(path: Path) -> bool:
    """Cheap content check: a YAML mapping with a top-level ``cases:`` key, a JSON array of official
    SafeEdit records, or a suite gone wrong: records keyed by the fields of a case (say a top-level
    list of cases without ``cases:``), which loading then reports with the fix. An unreadable file
    counts as a suite, so that loading it reports why."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:200_000]
    except OSError:
        return True
    if path.suffix == ".json":
        return _OFFICIAL_RECORD.match(head) is not None or _has_case_fields(_JSON_KEY.findall(head))
    return _TOP_LEVEL_CASES.search(head) is not None or _has_case_fields(_YAML_KEY.findall(head))


def _has_case_fields(keys: list[str]) -> bool:
    """Two fields of a case among the keys, one of them the question or the attack: files that merely
    share a word with a case (a GitHub workflow's ``category:``) are not suites."""
    found = set(keys) & CASE_FIELDS
    return len(found) >= 2 and not found.isdisjoint({"question", "attack"})


def relative_path(path: Path, folder: Path) -> str | None:
    """``path`` (resolved) from ``folder`` in POSIX form, or None when it lies outside."""
    try:
        return path.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


def outside_node_path(path: Path, rootpath: Path) -> str | None:
    """The path part of the node id of a suite file outside the rootdir (a bundled suite, or a file
    ``--safeedit-suite`` names): the path from the rootdir, where pytest would give an empty one. None
    for a file inside the rootdir, whose node id pytest makes."""
    resolved = path.resolve()
    if relative_path(resolved, rootpath) is not None:
        return None
    try:
        return Path(os.path.relpath(resolved, rootpath.resolve())).as_posix()
    except ValueError:  # another drive
        return resolved.as_posix()


def suite_key(path: Path, rootpath: Path) -> str:
    """The key of a suite file in a run (reports, baselines and merges match suites by it): the path
    from the rootdir; for a bundled suite outside it, ``pytest_safeedit/suites/<file>`` wherever the
    package is installed, so that baselines compare across machines; else the absolute path."""
    resolved = path.resolve()
    relative = relative_path(resolved, rootpath)
    if relative is not None:
        return relative
    if resolved in bundled_suites().values():
        return f"pytest_safeedit/suites/{resolved.name}"
    return resolved.as_posix()


def is_suite_file(path: Path, bases: tuple[Path, ...], patterns: tuple[str, ...], named: set[Path]) -> bool:
    """Whether pytest should collect ``path`` as a suite: named on the command line, bundled with the
    plugin, or matched by a pattern from one of ``bases`` (the rootdir, and the folder pytest was started
    in), and, for a generic pattern, holding a suite."""
    if path.suffix not in SUITE_SUFFIXES:
        return False
    resolved = path.resolve()
    if resolved in named or resolved in bundled_suites().values():
        return True
    relatives = {r for r in (relative_path(resolved, b) for b in bases) if r is not None}
    matched = [p for p in patterns if any(matches_pattern(r, p) for r in relatives)]
    if not matched:
        return False
    if all(is_generic(p) for p in matched):
        return looks_like_suite(path)
    return True
