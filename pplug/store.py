"""UserStore: users, versioned personas, append-only interaction history and per-user memory, in SQLite.

One embedded SQLite file holds everything a deployment keeps about its users:

    users         user_id, created_at, task
    personas      (user_id, version) -> persona document (JSON) + JSON diff from the previous version
    interactions  append-only rows: id, user_id, created_at, task, item (a LaMP profile item as JSON)
    memory        (interaction id, encoder) -> cached history embedding (float16 blob): the long-term memory
    api_keys      user_id -> sha256 (hex) of the user's API key for `pplug serve` (the key itself is never stored)
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
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .persona import Persona, diff
from .store_memory import MemoryVectors
from .store_schema import (
    SCHEMA,
    SCHEMA_VERSION,
    STORE_FILENAME,
    DuplicateUserError,
    Interaction,
    PersonaChange,
    StoreError,
    UnknownUserError,
    default_store_path,
    utc_now,
)


class UserStore(MemoryVectors):
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
        if not create and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no user store here (create a user first, or pass --store)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not switch SQLite to WAL mode (got {mode!r})")
            # FULL: a commit is on disk when commit() returns, so even a power cut keeps it (WAL+NORMAL
            # would only survive process crashes).
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            # executescript commits any open transaction first, so the script carries its own
            self._conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")
            with self._write():
                row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: store schema version {row[0]} is newer than this pplug ({SCHEMA_VERSION})"
                    )
                if row is None or int(row[0]) < SCHEMA_VERSION:  # the script above migrated an older file
                    self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise StoreError(f"{self.path}: not a usable SQLite store ({e})") from None
        self._indexes: dict[tuple[str, str], tuple[int, Any]] = {}

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

    # --- users ---

    def _require(self, user_id: str) -> None:
        if not self._read("SELECT 1 FROM users WHERE user_id = ?", (user_id,)):
            n = self._read("SELECT COUNT(*) FROM users")[0][0]
            raise UnknownUserError(
                f"unknown user {user_id!r} in store {self.path} ({n} users; create it with `pplug user create`)"
            )

    def has_user(self, user_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM users WHERE user_id = ?", (user_id,)))

    def users(self) -> list[str]:
        """All user ids, sorted."""
        return [r[0] for r in self._read("SELECT user_id FROM users ORDER BY user_id")]

    def user_task(self, user_id: str) -> str | None:
        """The task given when the user was created (None if not given)."""
        self._require(user_id)
        return self._read("SELECT task FROM users WHERE user_id = ?", (user_id,))[0][0]

    def create_user(
        self, user_id: str, persona: Persona | dict | None = None, task: str | None = None, message: str = ""
    ) -> Persona:
        """Add a user with persona version 1; returns the stored persona.

        `identity.user_id` is set to `user_id` (a different value is an error) and `memory.long_term`
        defaults to "pplug-store:<user_id>" (this store's memory index).

        Raises:
            DuplicateUserError: the user exists.
        """
        if not isinstance(user_id, str) or not user_id.strip() or user_id != user_id.strip():
            raise StoreError(f"invalid user id {user_id!r}: a non-empty string without surrounding spaces")
        if task is not None:
            from .tasks import get_task

            task = get_task(task).name
        p = persona if isinstance(persona, Persona) else Persona.from_dict(persona or {}, source=f"persona of {user_id}")
        p = p.copy()
        if p.identity.user_id not in (None, user_id):
            raise StoreError(f"persona of {user_id!r}: field 'identity.user_id' is {p.identity.user_id!r}, not {user_id!r}")
        p.identity.user_id = user_id
        if p.memory.long_term is None:
            p.memory.long_term = f"pplug-store:{user_id}"
        doc = p.to_dict()
        with self._write() as c:
            if c.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone():
                raise DuplicateUserError(f"user {user_id!r} already exists in store {self.path}")
            now = utc_now()
            c.execute("INSERT INTO users VALUES (?, ?, ?)", (user_id, now, task))
            c.execute(
                "INSERT INTO personas VALUES (?, 1, ?, 'create', ?, ?, ?)",
                (user_id, now, message, json.dumps(doc, sort_keys=True), json.dumps(diff({}, doc))),
            )
        return p

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Erase a user: interactions, memory vectors, persona versions, API key and the user row.

        One transaction (all or nothing). The append-only trigger admits these deletes only while the
        user's id is in `erasures`, which this transaction inserts and removes again. Freed pages are
        zeroed (`secure_delete`) and the WAL is checkpointed and truncated afterwards, so the text does
        not survive in the SQLite files; this process's faiss index of the user is dropped too. Cached
        sentence embeddings live in another file (`pplug.embedding_cache.EmbeddingCache.delete_many`).

        Returns:
            Counts of what was removed: {"interactions", "memory_vectors", "persona_versions", "api_keys",
            "users", "faiss_indexes"}.

        Raises:
            UnknownUserError: no such user.
        """
        self._require(user_id)
        counts: dict[str, int] = {}
        with self._lock:
            self._conn.execute("PRAGMA secure_delete=ON")
            try:
                with self._write() as c:
                    c.execute("INSERT OR REPLACE INTO erasures VALUES (?)", (user_id,))
                    for name, table in (("memory_vectors", "memory"), ("interactions", "interactions"),
                                        ("persona_versions", "personas"), ("api_keys", "api_keys"),
                                        ("users", "users")):
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

    # --- API keys (pplug serve) ---

    def set_api_key_hash(self, user_id: str, key_sha256: str) -> None:
        """Record the sha256 (hex) of the user's API key, replacing an earlier one."""
        self._require(user_id)
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO api_keys VALUES (?, ?, ?)", (user_id, key_sha256, utc_now()))

    def user_for_api_key_hash(self, key_sha256: str) -> str | None:
        """The user whose API key hashes to `key_sha256` (None when no user has it)."""
        rows = self._read("SELECT user_id FROM api_keys WHERE key_sha256 = ?", (key_sha256,))
        return rows[0][0] if rows else None

    def last_user_interaction_id(self, user_id: str) -> int:
        """Highest interaction id of one user (0 when none): changes whenever the user's history grows."""
        return int(self._read("SELECT COALESCE(MAX(id), 0) FROM interactions WHERE user_id = ?", (user_id,))[0][0])

    # --- personas ---

    def persona(self, user_id: str, version: int | None = None) -> Persona:
        """The user's persona (latest version, or the given one)."""
        self._require(user_id)
        if version is None:
            rows = self._read(
                "SELECT document FROM personas WHERE user_id = ? ORDER BY version DESC LIMIT 1", (user_id,)
            )
        else:
            rows = self._read("SELECT document FROM personas WHERE user_id = ? AND version = ?", (user_id, version))
            if not rows:
                raise StoreError(f"user {user_id!r} has no persona version {version}")
        return Persona.from_dict(json.loads(rows[0][0]), source=f"{self.path}: persona of {user_id}")

    def persona_version(self, user_id: str) -> int:
        """Latest persona version number (1 after create)."""
        self._require(user_id)
        return int(self._read("SELECT MAX(version) FROM personas WHERE user_id = ?", (user_id,))[0][0])

    def update_persona(self, user_id: str, persona: Persona, source: str = "manual", message: str = "") -> int:
        """Record `persona` as a new version (with its diff) unless nothing changed; returns the version."""
        self._require(user_id)
        new = persona.to_dict()
        with self._write() as c:
            version, doc = c.execute(
                "SELECT version, document FROM personas WHERE user_id = ? ORDER BY version DESC LIMIT 1", (user_id,)
            ).fetchone()
            ops = diff(json.loads(doc), new)
            if not ops:
                return int(version)
            c.execute(
                "INSERT INTO personas VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user_id, version + 1, utc_now(), source, message, json.dumps(new, sort_keys=True), json.dumps(ops)),
            )
            return int(version) + 1

    def persona_log(self, user_id: str) -> list[PersonaChange]:
        """All persona versions of the user, oldest first, each with its diff."""
        self._require(user_id)
        rows = self._read(
            "SELECT version, created_at, source, message, diff FROM personas WHERE user_id = ? ORDER BY version",
            (user_id,),
        )
        return [PersonaChange(int(v), t, s, m, json.loads(d)) for v, t, s, m, d in rows]

    # --- interactions ---

    def add_interactions(
        self,
        user_id: str,
        items: Sequence[dict],
        task: str | None = None,
        embeddings: np.ndarray | Any | None = None,
        encoder: str | None = None,
    ) -> list[int]:
        """Append items (one transaction) and, optionally, their memory embeddings; returns their ids.

        Args:
            user_id: an existing user.
            items: LaMP profile items (JSON-serialisable dicts), oldest first.
            task: task the items belong to (default: the user's task).
            embeddings: (N, dim) vectors of the items' history texts, stored as long-term memory.
            encoder: identity of the encoder that produced `embeddings` (required with them).
        """
        self._require(user_id)
        if task is None:
            task = self.user_task(user_id)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise StoreError(f"interaction {i} of user {user_id!r}: expected a JSON object, got {type(item).__name__}")
        vecs = None
        if embeddings is not None:
            if encoder is None:
                raise StoreError("add_interactions: `encoder` (identity) is required with `embeddings`")
            vecs = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, np.float32)
            if vecs.ndim != 2 or len(vecs) != len(items):
                raise StoreError(f"add_interactions: {len(items)} items but embeddings of shape {tuple(vecs.shape)}")
        ids = []
        with self._write() as c:
            now = utc_now()
            for item in items:
                cur = c.execute(
                    "INSERT INTO interactions (user_id, created_at, task, item) VALUES (?, ?, ?, ?)",
                    (user_id, now, task, json.dumps(item, ensure_ascii=False, sort_keys=True)),
                )
                ids.append(int(cur.lastrowid))
            if vecs is not None:
                c.executemany(
                    "INSERT OR REPLACE INTO memory VALUES (?, ?, ?, ?)",
                    [(i, encoder, user_id, v.astype(np.float16).tobytes()) for i, v in zip(ids, vecs)],
                )
        return ids

    def history(
        self, user_id: str, task: str | None = None, after_id: int = 0, limit: int | None = None
    ) -> list[Interaction]:
        """The user's interactions, oldest first (only `task`'s if given; only ids > `after_id`).

        `limit` keeps the most recent `limit` rows.
        """
        self._require(user_id)
        sql = "SELECT id, user_id, created_at, task, item FROM interactions WHERE user_id = ? AND id > ?"
        params: list[Any] = [user_id, after_id]
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id"
            params.append(int(limit))
        else:
            sql += " ORDER BY id"
        return [Interaction(i, u, t, k, json.loads(it)) for i, u, t, k, it in self._read(sql, params)]

    def history_items(self, user_id: str, task: str | None = None, limit: int | None = None) -> list[dict]:
        """Just the items of `history` (oldest first)."""
        return [r.item for r in self.history(user_id, task=task, limit=limit)]

    def count_interactions(self, user_id: str | None = None, after_id: int = 0, task: str | None = None) -> int:
        """Number of interactions (of one user or all; only ids > `after_id`; only `task`'s if given)."""
        sql, params = "SELECT COUNT(*) FROM interactions WHERE id > ?", [after_id]
        if user_id is not None:
            self._require(user_id)
            sql += " AND user_id = ?"
            params.append(user_id)
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        return int(self._read(sql, params)[0][0])

    def count_by_task(self, user_id: str) -> dict[str, int]:
        """Interaction counts of one user per task."""
        self._require(user_id)
        rows = self._read("SELECT task, COUNT(*) FROM interactions WHERE user_id = ? GROUP BY task", (user_id,))
        return {str(t): int(n) for t, n in rows}

    def last_interaction_id(self) -> int:
        """Highest interaction id in the store (0 when empty): a watermark for "new since"."""
        return int(self._read("SELECT COALESCE(MAX(id), 0) FROM interactions")[0][0])

    def interactions_since(self, after_id: int, task: str | None = None) -> list[Interaction]:
        """All users' interactions with id > `after_id`, in id order."""
        sql = "SELECT id, user_id, created_at, task, item FROM interactions WHERE id > ?"
        params: list[Any] = [after_id]
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        return [Interaction(i, u, t, k, json.loads(it)) for i, u, t, k, it in self._read(sql + " ORDER BY id", params)]


__all__ = [
    "UserStore",
    "Interaction",
    "PersonaChange",
    "StoreError",
    "UnknownUserError",
    "DuplicateUserError",
    "default_store_path",
    "STORE_FILENAME",
]
