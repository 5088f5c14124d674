"""The options reference, rendered from the plugin's own options table so that it cannot drift.

A MkDocs hook (``hooks:`` in mkdocs.yml): the marker ``<!-- safeedit-options -->`` in ``options.md``
is replaced, at build time, by a table of every ``Option`` in ``pytest_safeedit.plugin.options.OPTIONS`` and
a table of the ini keys that ``add_options`` registers without a flag. Run it as a script
(``python docs/gen_options.py``) to print the rendered Markdown.
"""

from __future__ import annotations

import re
from typing import Any

MARKER = "<!-- safeedit-options -->"
OPTIONS_PAGE = "options.md"

_FLAG = re.compile(r"(--safeedit-[a-z0-9-]+)")


def _text(text: str) -> str:
    """Help text as a Markdown table cell: flags as code, Markdown's special characters escaped."""
    cells = []
    for part in _FLAG.split(text):
        if _FLAG.fullmatch(part):
            cells.append(f"`{part}`")
        else:
            for char in "\\`*_[]|<>":
                part = part.replace(char, "\\" + char)
            cells.append(part)
    return "".join(cells)


class _Recorder:
    """Stands in for pytest's parser and option group: records what ``add_options`` registers."""

    def __init__(self) -> None:
        self.ini: dict[str, dict[str, Any]] = {}

    def getgroup(self, name: str, description: str = "") -> _Recorder:
        return self

    def addoption(self, *names: str, **attrs: Any) -> None:
        pass

    def addini(self, name: str, help: str, type: str | None = None, default: Any = None) -> None:
        self.ini[name] = {"help": help, "type": type, "default": default}


def render_options() -> str:
    """The options reference as Markdown: every flag with its ini key and help, then the ini-only keys."""
    from pytest_safeedit.plugin.options import OPTIONS, add_options

    lines = [
        "| option | ini key | meaning |",
        "|---|---|---|",
    ]
    for option in OPTIONS:
        flag = f"`{option.flag}`" if option.is_flag else f"`{option.flag} {option.metavar or 'VALUE'}`"
        if not option.ini:
            ini = "-"
        elif option.multiple:
            ini = f"`{option.dest}` (one per line)"
        else:
            ini = f"`{option.dest}`"
        lines.append(f"| {flag} | {ini} | {_text(option.help)} |")

    recorder = _Recorder()
    add_options(recorder)  # type: ignore[arg-type]
    flag_keys = {option.dest for option in OPTIONS}
    ini_only = {name: spec for name, spec in recorder.ini.items() if name not in flag_keys}
    if ini_only:
        lines += [
            "",
            "Ini keys without a command-line flag:",
            "",
            "| ini key | meaning |",
            "|---|---|",
        ]
        for name, spec in ini_only.items():
            lines.append(f"| `{name}` | {_text(spec['help'])} |")
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: put the rendered options reference where the options page has its marker."""
    if page.file.src_uri != OPTIONS_PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{OPTIONS_PAGE} lost its marker {MARKER}: the options reference has nowhere to go")
    return markdown.replace(MARKER, render_options())


if __name__ == "__main__":
    print(render_options(), end="")
