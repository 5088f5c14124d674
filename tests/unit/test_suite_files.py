"""Which files are suites: patterns from the rootdir, generic patterns checked by content."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from pytest_safeedit.cases.loading import (
    bundled_suites,
    find_suite,
    is_generic,
    is_suite_file,
    matches_pattern,
    outside_node_path,
    suite_key,
)
from pytest_safeedit.config.settings import DEFAULT_SUITE_PATTERNS
from tests.helpers import MINI_SUITE, SAMPLE_SUITE
from tests.lookalikes import CASE_LIST, STRANGERS


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
        "suites/case-list.yaml": (CASE_LIST, True),  # a suite gone wrong: reported with the fix
        "suites/case-list.json": ('[{"question": "How?", "attack": "Free: {question}"}]', True),
        **{f"suites/{name}": (text, False) for name, text in STRANGERS.items()},
        "mine.safeedit.yaml": ("retries: 3\n", True),  # the name says it is a suite: errors are reported
    }
    for name, (text, _) in files.items():
        (tmp_path / name).write_text(text)
    for name, (_, expected) in files.items():
        assert is_suite_file(tmp_path / name, (tmp_path,), DEFAULT_SUITE_PATTERNS, set()) is expected, name
    named = {(tmp_path / "suites/config.yaml").resolve()}
    assert is_suite_file(tmp_path / "suites/config.yaml", (tmp_path,), DEFAULT_SUITE_PATTERNS, named)


def test_bundled_suites_are_found_by_name_and_always_collected(tmp_path: Path) -> None:
    assert bundled_suites()["sample"].read_bytes() == SAMPLE_SUITE.read_bytes()
    assert find_suite("sample", tmp_path) == bundled_suites()["sample"]
    assert is_suite_file(bundled_suites()["sample"], (tmp_path,), DEFAULT_SUITE_PATTERNS, set())


def test_suite_paths_are_taken_from_the_base(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(MINI_SUITE)
    assert find_suite("mine.yaml", tmp_path) == (tmp_path / "mine.yaml").resolve()
    assert find_suite("./mine.yaml", tmp_path) == (tmp_path / "mine.yaml").resolve()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonexistent", "'nonexistent' is not a bundled suite; the bundled suites are: sample*"),
        ("missing.yaml", "'missing.yaml': no such file; give a suite file's path or a bundled suite's name (sample)"),
        ("notes/readme.txt", "'notes/readme.txt' is not a suite file; give a file ending in .yaml, .yml, .json"),
    ],
)
def test_unknown_suites_name_the_bundled_ones(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        find_suite(spec, tmp_path)
    assert fnmatch.fnmatch(str(excinfo.value), message), str(excinfo.value)


def test_node_path_of_suites_outside_the_rootdir(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    assert outside_node_path(tmp_path / "project" / "a.yaml", tmp_path / "project") is None
    assert outside_node_path(tmp_path / "elsewhere" / "a.yaml", tmp_path / "project") == "../elsewhere/a.yaml"


def test_suite_keys(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    assert suite_key(tmp_path / "project" / "suites" / "a.yaml", tmp_path / "project") == "suites/a.yaml"
    assert suite_key(tmp_path / "a.yaml", tmp_path / "project") == (tmp_path / "a.yaml").resolve().as_posix()
    # a bundled suite has the same key wherever the package is installed
    assert suite_key(bundled_suites()["sample"], tmp_path / "project") == "pytest_safeedit/suites/sample.yaml"
