"""The plugin as a user installs it: the wheel built from this checkout, in a fresh virtual environment,
run from an empty folder with no checkout on the path (issue 24, defect 11)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command as a user's shell would: no pytest variables of this run, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "PYTHONPATH"}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a fresh virtual environment holding the built wheel. Its dependencies (torch,
    pytest, ...) come from this environment through a ``.pth`` file, so that nothing is downloaded; the
    editable install of this checkout is not visible there (``.pth`` files of that folder are not run)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("pytest_safeedit", "suites"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    built = run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", work / "dist", f"{source}/")
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "dist").glob("pytest_safeedit-*.whl")
    venv = work / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    done = run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel)
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def test_bundled_sample_suite_runs_from_an_empty_folder(
    installed_python: Path, tmp_path: Path, demo_cache: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(installed_python, "-c", "import pytest_safeedit; print(pytest_safeedit.__file__)", cwd=empty)
    assert Path(where.stdout.strip()).is_relative_to(installed_python.parent.parent), where.stdout + where.stderr
    result = run(
        *(installed_python, "-m", "pytest", "-p", "no:cacheprovider", "-rA"),
        *("--safeedit-model", "demo", "--safeedit-suite", "sample", "--safeedit-cache-dir", demo_cache),
        *("-k", "illegal_activities and (DS or DG_onlyQ)"),
        cwd=empty,
    )
    out = result.stdout
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, out + result.stderr
    # the demo model refuses the bare questions and complies under attack
    assert "4 failed, 4 passed, 190 deselected" in out, out
    assert "site-packages/pytest_safeedit/suites/sample.yaml::illegal-activities-001[DG_onlyQ]" in out, out
    assert "illegal activities" in out and "total: pass rate 50.0%" in out, out
