"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every write of a checkpoint, persona file, predictions file or store export goes through here:
write to a temporary file in the same folder, fsync, then `os.replace` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically, creating parent folders. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write `obj` as JSON (sorted keys, UTF-8) to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def publish_folder(staged: str | os.PathLike, out: str | os.PathLike) -> bool:
    """fsync every file under the staging folder `staged` (a `tempfile.mkdtemp` sibling of `out`); where `out`
    does not exist yet, move `staged` into place in one rename and return True. Returns False, with nothing
    moved, where `out` exists: the caller then replaces its files one by one, in an order that keeps the
    folder readable at every step.
    """
    staged, out = Path(staged), Path(out)
    for f in staged.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if out.exists():
        return False
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staged, 0o777 & ~umask)  # mkdtemp makes it 0700; a published folder gets a plain mkdir's mode
    os.replace(staged, out)
    return True
