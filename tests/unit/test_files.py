"""Folders built once: a failed or killed build leaves nothing behind for good, a live one is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pytest_safeedit
from pytest_safeedit.util.files import build_once

#: A process that builds ``argv[1]`` with build_once: it writes a weight file, then kills itself
#: ("kill") or waits for ``argv[3]`` to appear before it finishes ("wait").
BUILDER = """
import os, signal, sys, time
from pathlib import Path
from pytest_safeedit.util.files import build_once

def build(work):
    (work / "model.safetensors").write_bytes(b"0" * 4096)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    (work / "started").write_text("")
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
    (work / "done.json").write_text("{}")

build_once(Path(sys.argv[1]), "done.json", build)
"""
needs_kill = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")


def builder(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(pytest_safeedit.__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", BUILDER, *args], env=env)


def temporary(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("."))


def write_done(work: Path) -> None:
    (work / "done.json").write_text("{}")


def test_a_failed_build_leaves_no_temporary_folder(tmp_path: Path) -> None:
    def failing(work: Path) -> None:
        (work / "model.safetensors").write_bytes(b"0" * 4096)
        raise MemoryError("dequantizing")

    with pytest.raises(MemoryError):
        build_once(tmp_path / "key", "done.json", failing)
    assert list(tmp_path.iterdir()) == []
    assert (build_once(tmp_path / "key", "done.json", write_done) / "done.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no lock file carried into the result


@needs_kill
def test_the_folder_of_a_killed_build_is_removed_by_the_next_build(tmp_path: Path) -> None:
    assert builder(str(tmp_path / "key"), "kill").wait(60) == -9
    (left,) = temporary(tmp_path)
    assert (left / "model.safetensors").is_file()
    build_once(tmp_path / "other", "done.json", write_done)
    assert temporary(tmp_path) == []


@needs_kill
def test_a_build_under_way_in_another_process_is_left_alone(tmp_path: Path) -> None:
    go = tmp_path / "go"
    root = tmp_path / "cache"
    process = builder(str(root / "key"), "wait", str(go))
    try:
        deadline = time.monotonic() + 60
        while not any((p / "started").exists() for p in (temporary(root) if root.exists() else [])):
            assert time.monotonic() < deadline and process.poll() is None, "the builder should have started"
            time.sleep(0.05)
        build_once(root / "other", "done.json", write_done)
        assert len(temporary(root)) == 1
    finally:
        go.write_text("")
        assert process.wait(60) == 0
    assert (root / "key" / "done.json").is_file() and temporary(root) == []


def test_unlocked_temporary_folders_are_removed_only_when_old(tmp_path: Path) -> None:
    """Left by a version without locks: removed once untouched for a day."""
    old, recent, other = tmp_path / ".key-abcd1234", tmp_path / ".key-wxyz5678", tmp_path / ".not-a-build"
    for folder in (old, recent, other):
        folder.mkdir()
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    os.utime(other, (day_ago, day_ago))
    build_once(tmp_path / "key", "done.json", write_done)
    assert temporary(tmp_path) == [recent, other]


def test_a_failed_gguf_conversion_leaves_nothing_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_safeedit.backends.gguf_cache as gguf_cache

    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF" + b"0" * 64)

    def crashed(path: Path, dtype: str, work: Path, about: object) -> None:
        (work / "model.safetensors").write_bytes(b"0" * 4096)
        raise RuntimeError("unsupported quantization")

    monkeypatch.setattr(gguf_cache, "_convert", crashed)
    with pytest.raises(RuntimeError, match="unsupported quantization"):
        gguf_cache.converted_folder(source, "float32", tmp_path / "cache")
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []
