"""UserStore: users, versioned personas, append-only interaction history and per-user memory, in SQLite.

One embedded SQLite file holds everything a deployment keeps about its users:

    users         user_id, created_at, task
    personas      (user_id, version) -> persona document (JSON) + JSON diff from the previous version
    interactions  append-only rows: id, user_id, created_at, task, item (a LaMP profile item as JSON)
    memory        (interaction id, encoder) -> cached history embedding (float16 blob): the long-term memory
    api_keys      user_id -> sha256 (hex) of the user's API key for `pplug serve` (the key itself is never stored)
    idempotency   (user_id, key) -> sha256 of a history upload made with that idempotency key, and its result
    erasures      empty except inside a `delete_user` transaction (see below)

The persona's long-term memory is a faiss index over a user's `memory` vectors, built on demand and kept
per process (`recall`). Writes run in `BEGIN IMMEDIATE` transactions in WAL mode with `synchronous=FULL`:
readers never block the one writer, a committed row survives a crash (even a SIGKILL mid-batch), and a
transaction cut short leaves no trace. Interactions are append-only (triggers refuse UPDATE / DELETE).

The one exception is erasure (`delete_user`, a user's right to be forgotten): the DELETE trigger lets rows
of a user go only while that user's id sits in the `erasures` table, and `delete_user` inserts it, deletes
every row of the user and removes it again inside ONE transaction, so no other connection ever sees the
flag and a plain `DELETE FROM interactions` still fails. Erasure runs with `PRAGMA secure_delete` (freed
pages are zeroed) and truncates the WAL afterwards, so the deleted text does not linger in the files.

The file is `pplug_store.sqlite` in the current folder by default, or `$PPLUG_HOME/pplug_store.sqlite`
when `PPLUG_HOME` is set; pass `path=` (CLI `--store`) to choose another.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .base import UserStoreBase
from .schema import (
    SCHEMA,
    SCHEMA_VERSION,
    STORE_FILENAME,
    StoreError,
    default_store_path,
)


class UserStore(UserStoreBase):
    """SQLite-backed store of users, versioned personas, interactions and memory vectors.

    Args:
        path: SQLite file (created if missing); None -> `default_store_path()`.
        timeout: seconds to wait for another writer before failing.
        create: False -> a missing file is a FileNotFoundError (for read-only commands).

    Safe to use from several processes at once (WAL: many readers, one writer at a time). One
    connection per object; use it from one thread at a time or guard it (an internal lock does).
    """

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 30.0, create: bool = True):
        self.path = Path(path) if path is not None else default_store_path()
        self.location = str(self.path)
        if self.path.is_dir():  # sqlite3 would say only "unable to open database file"
            raise StoreError(f"{self.path}: a folder, not a SQLite store file (name a file, e.g. "
                             f"{self.path / STORE_FILENAME})")
        if not create and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no user store here (create a user first, or pass --store)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(f"{self.path}: cannot create the store, {self.path.parent} is not a folder") from None
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open the SQLite store ({e})") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not switch SQLite to WAL mode (got {mode!r})")
            # FULL: a commit is on disk when commit() returns, so even a power cut keeps it (WAL+NORMAL
            # would only survive process crashes).
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._refuse_newer()  # before the script below touches a file of a newer layout
            # executescript commits any open transaction first, so the script carries its own
            self._conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")
            with self._write():
                row = self._refuse_newer()
                if row is None or int(row[0]) < SCHEMA_VERSION:  # the script above migrated an older file
                    self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except StoreError:
            self._conn.close()
            raise
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise StoreError(f"{self.path}: not a usable SQLite store ({e})") from None
        self._indexes: dict[tuple[str, str], tuple[int, Any]] = {}

    def _refuse_newer(self) -> tuple | None:
        """The recorded schema version row (None: none yet); a newer version than this pplug's is an error."""
        if not self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
            return None
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema version {row[0]} is newer than this pplug ({SCHEMA_VERSION}); "
                             "upgrade pplug to use it")
        return row

    # --- plumbing ---

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlocks)."""
        with self._lock:
            if self._conn.in_transaction:  # nested use joins the outer transaction
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> UserStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check` result ("ok" when the file is sound)."""
        return str(self._read("PRAGMA integrity_check")[0][0])

    # --- erasure ---

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Erase a user: interactions, memory vectors, persona versions, API key and the user row.

        One transaction (all or nothing). The append-only trigger admits these deletes only while the
        user's id is in `erasures`, which this transaction inserts and removes again. Freed pages are
        zeroed (`secure_delete`) and the WAL is checkpointed and truncated afterwards, so the text does
        not survive in the SQLite files; this process's faiss index of the user is dropped too. Cached
        sentence embeddings live in another file (`pplug.encode.cache.EmbeddingCache.delete_many`).

        Returns:
            Counts of what was removed: {"interactions", "memory_vectors", "persona_versions", "api_keys",
            "idempotency_keys", "users", "faiss_indexes"}.

        Raises:
            UnknownUserError: no such user.
        """
        counts: dict[str, int] = {}
        with self._lock:
            self._conn.execute("PRAGMA secure_delete=ON")
            try:
                with self._write() as c:
                    # checked under the write lock: of two erasures at once (two processes), the second
                    # finds no user and says so, rather than "erasing" nothing
                    if not self._lock_user(c, user_id):
                        raise self._unknown(user_id)
                    c.execute("INSERT OR REPLACE INTO erasures VALUES (?)", (user_id,))
                    for name, table in (("memory_vectors", "memory"), ("interactions", "interactions"),
                                        ("persona_versions", "personas"), ("api_keys", "api_keys"),
                                        ("idempotency_keys", "idempotency"), ("users", "users")):
                        counts[name] = int(c.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)).rowcount)
                    c.execute("DELETE FROM erasures WHERE user_id = ?", (user_id,))
            finally:
                self._conn.execute("PRAGMA secure_delete=OFF")
            # old page images of the deleted rows still sit in the WAL until a checkpoint copies the zeroed
            # pages over; TRUNCATE also empties the -wal file (a reader holding an old snapshot may delay it)
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            dropped = [k for k in self._indexes if k[0] == user_id]
            for k in dropped:
                del self._indexes[k]
        counts["faiss_indexes"] = len(dropped)
        return counts
