"""The persistent cache of sentence embeddings that `pplug.encode.history.HistoryEncoder` reads and fills.

A SQLite table (WAL mode, safe for concurrent processes) keyed by (encoder identity, sha256(text)), vectors
stored as compact float16 (or float32) blobs.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    encoder TEXT NOT NULL,
    key     BLOB NOT NULL,
    vec     BLOB NOT NULL,
    PRIMARY KEY (encoder, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS encoders (
    encoder TEXT PRIMARY KEY,
    dim     INTEGER NOT NULL,
    dtype   TEXT NOT NULL
);
"""
_SQL_CHUNK = 500  # bound on "?" parameters per query (SQLite's historic limit is 999)


def text_key(text: str) -> bytes:
    """Cache key of one text: its sha256 digest (32 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Persistent map (encoder identity, sha256(text)) -> embedding vector, backed by SQLite.

    WAL journaling lets many readers run while one process writes; writes use `INSERT OR IGNORE`, so two
    processes embedding the same text concurrently both succeed and agree (the encoder is deterministic).
    One connection per process (re-opened after a fork) guarded by a lock, so threads can share it.

    Args:
        path: SQLite file; None -> `$PPLUG_CACHE_DIR/embeddings.sqlite` (default `~/.cache/pplug/`);
            ":memory:" -> a private in-memory cache (nothing persists).
        dtype: storage dtype, "float16" (half the size, ~1e-3 relative error on unit vectors) or "float32".
    """

    def __init__(self, path: str | os.PathLike | None = None, dtype: str = "float16"):
        if path is None:
            from pplug.core.weights import cache_dir

            path = cache_dir() / "embeddings.sqlite"
        if dtype not in ("float16", "float32"):
            raise ValueError(f"EmbeddingCache dtype must be 'float16' or 'float32', got {dtype!r}")
        self.path = str(path)
        self.dtype = np.dtype(dtype)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable enough for a cache; much faster commits
            conn.execute("PRAGMA busy_timeout=60000")
            conn.executescript(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _check_encoder(self, conn: sqlite3.Connection, encoder: str, dim: int) -> None:
        row = conn.execute("SELECT dim, dtype FROM encoders WHERE encoder = ?", (encoder,)).fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO encoders VALUES (?, ?, ?)", (encoder, dim, self.dtype.name))
        elif row[0] != dim:
            raise ValueError(f"{self.path}: encoder {encoder!r} is cached with dim {row[0]}, got dim {dim}")

    def get_many(self, encoder: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Cached vectors for the given keys (missing keys are absent from the result), as float32."""
        out: dict[bytes, np.ndarray] = {}
        if not keys:
            return out
        with self._lock:
            conn = self._connect()
            dtypes = dict(conn.execute("SELECT encoder, dtype FROM encoders WHERE encoder = ?", (encoder,)).fetchall())
            if encoder not in dtypes:
                return out
            stored = np.dtype(dtypes[encoder])
            for i in range(0, len(keys), _SQL_CHUNK):
                chunk = list(keys[i : i + _SQL_CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, vec FROM embeddings WHERE encoder = ? AND key IN ({marks})", (encoder, *chunk)
                ).fetchall()
                for key, vec in rows:
                    out[bytes(key)] = np.frombuffer(vec, dtype=stored).astype(np.float32)
        return out

    def put_many(self, encoder: str, items: dict[bytes, np.ndarray]) -> None:
        """Store vectors (one transaction; existing keys are kept)."""
        if not items:
            return
        dim = len(next(iter(items.values())))
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlock between readers
            try:
                self._check_encoder(conn, encoder, dim)
                stored = np.dtype(
                    conn.execute("SELECT dtype FROM encoders WHERE encoder = ?", (encoder,)).fetchone()[0]
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?)",
                    [(encoder, k, np.asarray(v, dtype=stored).tobytes()) for k, v in items.items()],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def delete_many(self, encoder: str, keys: Sequence[bytes]) -> int:
        """Remove cached vectors (e.g. when a user is erased); returns how many rows were deleted.

        Runs with `secure_delete` (freed pages are zeroed) and truncates the WAL afterwards, so the vectors
        do not survive in the file. Texts shared with other users should be left out of `keys` by the caller.
        """
        if not keys:
            return 0
        n = 0
        with self._lock:
            conn = self._connect()
            conn.execute("PRAGMA secure_delete=ON")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for i in range(0, len(keys), _SQL_CHUNK):
                        chunk = list(keys[i : i + _SQL_CHUNK])
                        marks = ",".join("?" * len(chunk))
                        n += conn.execute(
                            f"DELETE FROM embeddings WHERE encoder = ? AND key IN ({marks})", (encoder, *chunk)
                        ).rowcount
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            finally:
                conn.execute("PRAGMA secure_delete=OFF")
            if self.path != ":memory:":
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(n)

    def count(self, encoder: str | None = None) -> int:
        """Number of cached vectors (for one encoder, or all)."""
        with self._lock:
            conn = self._connect()
            if encoder is None:
                return conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM embeddings WHERE encoder = ?", (encoder,)).fetchone()[0]

    def __len__(self) -> int:
        return self.count()

    def close(self) -> None:
        """Close this process's connection (it reopens on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __getstate__(self):  # picklable for DataLoader workers: reconnect on the other side
        return {"path": self.path, "dtype": self.dtype.name}

    def __setstate__(self, state):
        self.__init__(state["path"], state["dtype"])


__all__ = ["EmbeddingCache", "text_key"]
