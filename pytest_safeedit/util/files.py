"""Writing files and folders so that a reader never sees half of one."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Held (locked) in a build's temporary folder while its process lives: a build killed mid-way leaves
#: the folder unlocked, and the next build beside it removes it.
BUILD_LOCK = ".safeedit-building"
#: A temporary build folder without a lock (left by an older version, or where files cannot be locked)
#: is removed once untouched this long.
UNLOCKED_STALE_SECONDS = 24 * 3600
_TEMPORARY = re.compile(r"\..+-[a-z0-9_]{8}")


def atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so that readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; reports and caches are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_once(target: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """``target``, built by ``build`` into a temporary folder beside it and moved into place unless a
    finished build (one with ``marker``) is there already.

    The temporary folder is removed when the build fails, and the folders of builds whose process died
    (killed mid-way: a dequantized model can be gigabytes) are removed by the next build beside them."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_builds(target.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with _held(work / BUILD_LOCK):
            build(work)
            # Still held (the file is open) until the folder is in place, but not carried into it.
            (work / BUILD_LOCK).unlink(missing_ok=True)
            try:
                os.replace(work, target)
            except OSError:
                # Another process finished the same build first; its result is identical.
                if not (target / marker).is_file():
                    raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def remove_dead_builds(folder: Path) -> list[Path]:
    """Remove the temporary folders that :func:`build_once` left in ``folder`` from processes that died
    mid-build (their lock is free), and unlocked ones untouched for :data:`UNLOCKED_STALE_SECONDS`; the
    folders removed. A build under way in another process is left alone."""
    try:
        entries = [e for e in folder.iterdir() if _TEMPORARY.fullmatch(e.name) and e.is_dir()]
    except OSError:
        return []
    removed = []
    for entry in entries:
        try:
            fd = os.open(entry / BUILD_LOCK, os.O_RDWR)
        except FileNotFoundError:
            try:
                stale = time.time() - entry.stat().st_mtime > UNLOCKED_STALE_SECONDS
            except OSError:
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
            continue
        except OSError:
            continue
        try:
            if _try_lock(fd):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        finally:
            os.close(fd)
    return removed


def _try_lock(fd: int) -> bool:
    """Lock an open file without waiting; False where another process holds it (or locks do not work)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock file is made there
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextmanager
def _held(lock: Path) -> Iterator[None]:
    """``lock`` created and locked while active (where files cannot be locked, no lock file is left)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            os.close(fd)
            fd = -1
            lock.unlink(missing_ok=True)
        yield
    finally:
        if fd >= 0:
            os.close(fd)
