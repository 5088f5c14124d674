"""The generation cache on disk: responses keyed by everything that decides them, and model identities."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_safeedit.util.files import atomic_write

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")


def cache_root(cache_dir: str | None = None) -> Path:
    """The user's cache folder for pytest-safeedit (``--safeedit-cache-dir`` overrides it)."""
    if cache_dir:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-safeedit"


def digest(*parts: Any) -> str:
    """A stable hash of plain data."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: Path, memo_file: Path | None) -> str:
    """The SHA-256 of a file's content, remembered in ``memo_file`` by path, size and modification time."""
    memo = _read_memo(memo_file)
    value = _file_sha256(path, memo)
    _write_memo(memo_file, memo)
    return value


def _file_sha256(path: Path, memo: dict[str, str]) -> str:
    stat = path.stat()
    memo_key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if memo_key not in memo:
        h = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                h.update(block)
        memo[memo_key] = h.hexdigest()
    return memo[memo_key]


def _read_memo(memo_file: Path | None) -> dict[str, str]:
    """File hashes remembered by path, size and modification time."""
    if memo_file is None or not memo_file.is_file():
        return {}
    try:
        return dict(json.loads(memo_file.read_text()))
    except (OSError, ValueError):
        return {}


def _write_memo(memo_file: Path | None, memo: dict[str, str]) -> None:
    if memo_file is None:
        return
    try:
        atomic_write(memo_file, json.dumps(memo))
    except OSError:
        pass  # the memo only saves hashing time; an unwritable cache folder is reported by the cache


def files_identity(path: str, memo_file: Path | None = None) -> str | None:
    """The content identity of a model's files without loading it: a local folder or file, or a hub id's
    snapshot in the local hub cache; None when its files are not on this machine."""
    if not Path(path).exists():
        try:
            from huggingface_hub import snapshot_download

            path = snapshot_download(path, local_files_only=True)
        except Exception:  # noqa: BLE001 - not in the local hub cache: nothing to name it by
            return None

    def unloadable() -> tuple[Any, Any]:
        raise AssertionError("files_identity never loads a model")

    return model_identity(path, unloadable, memo_file)


def model_identity(path: str, load: Callable[[], tuple[Any, Any]], memo_file: Path | None) -> str:
    """What the model is: the content of its files for a local folder (weights, config, tokenizer) or
    of the file for a single-file model (GGUF), else the values of its parameters and its tokenizer's vocabulary and template (``load`` gives the
    model and the tokenizer). The name alone is never enough."""
    folder = Path(path)
    if folder.is_file():  # a single-file model (GGUF): its content is the model
        return digest("file", folder.suffix.lower(), file_digest(folder, memo_file))
    if folder.is_dir():
        memo = _read_memo(memo_file)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        parts = [(str(p.relative_to(folder)), _file_sha256(p, memo)) for p in files]
        _write_memo(memo_file, memo)
        return digest("files", parts)
    import torch

    model, tokenizer = load()
    h = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            h.update(name.encode())
            h.update(param.detach().float().cpu().numpy().tobytes())
    vocabulary = sorted(tokenizer.get_vocab().items())
    template = getattr(tokenizer, "chat_template", None)
    return digest("parameters", type(model).__name__, h.hexdigest(), vocabulary, template)


class CacheWarning(UserWarning):
    """The generation cache could not be read or written; the run goes on without it."""


class GenerationCache:
    """Entries are JSON files named by their key; a missing, unreadable or corrupt entry is a miss.

    An I/O error of the cache folder itself (not writable, disk full) warns once and turns the cache off
    for the rest of the run: generation goes on, nothing is lost but the caching.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0
        #: Why the cache was turned off during the run (None while it works).
        self.failure: str | None = None
        #: Why the cache is off for this run by design (a served model without a revision), or None.
        self.off_reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def turn_off(self, reason: str) -> None:
        """No reading or writing for the rest of the run, for ``reason`` (said in the summary)."""
        self.off_reason = reason
        self.root = None

    def _fail(self, action: str, exc: OSError) -> None:
        self.failure = f"could not {action} {self.root}: {exc.strerror or exc}"
        warnings.warn(CacheWarning(f"generation cache off for the rest of the run: {self.failure}"), stacklevel=3)
        self.root = None

    def get(self, key: str, *fields: str, count: bool = True) -> dict[str, Any] | None:
        """The entry under ``key`` holding ``fields``, or None; ``count`` adds it to the hit and miss
        counters (which count generations, not verdicts)."""
        if self.root is None:
            return None
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError, ValueError):
            data = None
        except OSError as exc:
            self._fail("read", exc)
            data = None
        if not isinstance(data, dict) or data.get("key") != key or any(f not in data for f in fields):
            self.misses += count
            return None
        self.hits += count
        return data

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.root is None:
            return
        try:
            atomic_write(self._path(key), json.dumps({**value, "key": key}, ensure_ascii=False))
        except OSError as exc:
            self._fail("write to", exc)
