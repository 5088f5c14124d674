"""The README and the docs site: short README, options reference generated from the code, no dead links,
and a strict MkDocs build."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from types import ModuleType

import pytest

from pytest_safeedit.plugin.options import OPTIONS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s*```.*?^\s*```", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def gen_options() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_options", DOCS / "gen_options.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prose(path: Path) -> str:
    """A Markdown file without its code blocks and code spans (links there are examples, not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """A heading's anchor as MkDocs' table of contents (Python-Markdown's default slugify) makes it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (code spans in a heading keep their text)."""
    headings = _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8")))
    return {slug(heading.replace("`", "")) for heading in headings}


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_readme_is_at_most_250_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_flag_in_the_options_table_is_in_the_generated_options_page() -> None:
    module = gen_options()
    assert module.MARKER in (DOCS / module.OPTIONS_PAGE).read_text(encoding="utf-8")
    page = module.render_options()
    missing = [option.flag for option in OPTIONS if f"`{option.flag}" not in page]
    assert not missing, f"flags missing from the generated options page: {missing}"
    ini_keys = [option.dest for option in OPTIONS if option.ini]
    assert not [key for key in ini_keys if f"`{key}`" not in page]
    assert "`safeedit_suite_patterns`" in page  # an ini key without a flag


def test_the_options_page_is_not_written_by_hand() -> None:
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    assert not [option.flag for option in OPTIONS if f"| `{option.flag}" in text]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_at_existing_files_and_headings(path: Path) -> None:
    broken = []
    for target in _LINK.findall(prose(path)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.name}")
    assert not broken, f"{path.name}: " + "; ".join(broken)


def test_readme_links_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    pages = sorted(page.name for page in DOCS.glob("*.md") if page.name != "index.md")
    assert not [page for page in pages if f"(docs/{page}" not in text]


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    site = tmp_path / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    result = subprocess.run(
        [*command, "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    options_html = (site / "options" / "index.html").read_text(encoding="utf-8")
    assert not [option.flag for option in OPTIONS if option.flag not in options_html]
    assert not list(site.rglob("*.py")), "the options hook was published as a page asset"
