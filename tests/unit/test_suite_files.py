"""Which files are suites: patterns from the rootdir, generic patterns checked by content."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_safeedit.settings import DEFAULT_SUITE_PATTERNS
from pytest_safeedit.suite_files import is_generic, is_suite_file, matches_pattern
from tests.helpers import MINI_SUITE


@pytest.mark.parametrize(
    ("relative", "pattern", "expected"),
    [
        ("suites/a.yaml", "suites/*.yaml", True),
        ("suites/nested/a.yaml", "suites/*.yaml", False),
        ("web/suites/a.yaml", "suites/*.yaml", False),
        ("web/suites/a.yaml", "**/suites/*.yaml", True),
        ("suites/a.yaml", "**/suites/*.yaml", True),
        ("deep/x/y.safeedit.yaml", "*.safeedit.yaml", True),
        ("SafeEdit_test.json", "SafeEdit_*.json", True),
        ("data/SafeEdit_test.json", "SafeEdit_*.json", True),
        ("suites/a.yml", "suites/*.yaml", False),
    ],
)
def test_pattern_matching(relative: str, pattern: str, expected: bool) -> None:
    assert matches_pattern(relative, pattern) is expected


def test_generic_patterns() -> None:
    assert [p for p in DEFAULT_SUITE_PATTERNS if is_generic(p)] == ["suites/*.yaml", "suites/*.yml", "suites/*.json"]


def test_content_decides_for_generic_patterns(tmp_path: Path) -> None:
    (tmp_path / "suites").mkdir()
    files = {
        "suites/mine.yaml": (MINI_SUITE, True),
        "suites/broken.yaml": ("cases:\n  - [not, a, case\n", True),  # a suite with an error: reported
        "suites/config.yaml": ("retries: 3\n", False),
        "suites/tsconfig.json": ('{"compilerOptions": {}}', False),
        "suites/records.json": ('[{"id": 1, "unsafety category": "Pornography"}]', True),
        "suites/empty.json": ("[]", False),
        "mine.safeedit.yaml": ("retries: 3\n", True),  # the name says it is a suite: errors are reported
    }
    for name, (text, _) in files.items():
        (tmp_path / name).write_text(text)
    for name, (_, expected) in files.items():
        assert is_suite_file(tmp_path / name, (tmp_path,), DEFAULT_SUITE_PATTERNS, set()) is expected, name
    named = {(tmp_path / "suites/config.yaml").resolve()}
    assert is_suite_file(tmp_path / "suites/config.yaml", (tmp_path,), DEFAULT_SUITE_PATTERNS, named)
