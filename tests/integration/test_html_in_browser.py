"""The HTML report in a real browser (headless Chromium): the header and the heat map are on the first
screen at 1280x800, and model output made of markup and script shows as text."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import BENIGN, MINI_SUITE, STRICT

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)><b>bold</b>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
    "--hide-scrollbars",
]
#: Added to a copy of the report, for the test only: where the parts landed, and what ran.
PROBE = """<script>
window.addEventListener('load', () => {
  const box = (q) => { const e = document.querySelector(q); if (!e) return null;
    const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, right: r.right}; };
  const out = {
    viewport: [innerWidth, innerHeight], title: document.title,
    header: box('.head'), heat: box('table.heat'), meta: box('p.meta'),
    scripts: document.scripts.length, images: document.images.length,
    bold: document.querySelectorAll('pre b').length,
    text: Array.from(document.querySelectorAll('pre')).map(p => p.textContent).join('\\n'),
  };
  const pre = document.createElement('pre'); pre.id = 'measured'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browser(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = cwd / "chromium-profile"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_report_first_screen_and_escaping_in_chromium(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makefile(".safeedit.yaml", mini=MINI_SUITE + BENIGN)
    pytester.makeconftest(
        f"""
        from tests.helpers import FakeGenerator

        def pytest_safeedit_generator(config, settings):
            return FakeGenerator(lambda text, system: {HOSTILE!r})
        """
    )
    result = pytester.runpytest(
        f"--safeedit-model={tiny_model_dir}", STRICT, "--safeedit-editor", "self-reminder",
        "--safeedit-report-html", "report.html", "--safeedit-min-pass-rate", "0.5",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    page = (pytester.path / "report.html").read_text()
    assert "<script" not in page and "<img" not in page  # the report itself runs nothing
    (pytester.path / "probe.html").write_text(page.replace("</body>", PROBE + "</body>"))
    dom = browser("--virtual-time-budget=3000", "--dump-dom", "probe.html", cwd=pytester.path)
    start = dom.stdout.index('<pre id="measured">') + len('<pre id="measured">')
    measured = json.loads(html.unescape(dom.stdout[start : dom.stdout.index("</pre>", start)]))
    width, height = measured["viewport"]  # the 1280x800 window less the browser's own bars
    assert width == 1280 and 600 <= height <= 800
    assert measured["title"] == "SafeEdit report"  # the hostile script did not run
    assert measured["scripts"] == 1 and measured["images"] == 0 and measured["bold"] == 0  # only the probe
    assert HOSTILE in measured["text"]  # shown as text
    for part in ("header", "heat", "meta"):
        assert 0 <= measured[part]["top"] and measured[part]["bottom"] <= height, (part, measured[part])
        assert measured[part]["right"] <= 1280, (part, measured[part])
    shot = browser("--screenshot=shot.png", "report.html", cwd=pytester.path)
    assert (pytester.path / "shot.png").stat().st_size > 10_000, shot.stderr[-2000:]
