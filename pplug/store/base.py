"""UserStoreBase: the rules of users, versioned personas, append-only interactions and API keys, shared by
the SQLite (`pplug.store`) and PostgreSQL (`pplug.store.postgres`) backends.

A backend provides `_read(sql, params)`, a `_write()` transaction whose connection has `execute(sql, params)`
returning a cursor, `delete_user` and `location`; the SQL here uses `?` placeholders and only syntax both
engines accept (`INSERT ... ON CONFLICT`, `RETURNING`). Two hooks carry what differs inside a transaction:
`_lock_user` (PostgreSQL locks the user's row so replicas writing one user queue up) and `_lock_appends`
(interaction ids must commit in id order: `interactions_since(watermark)` would skip a lower id committed late).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pplug.persona.schema import Persona, diff

from .memory import MemoryVectors
from .schema import (
    Appended,
    DuplicateUserError,
    IdempotencyKeyReusedError,
    Interaction,
    PersonaChange,
    StoreError,
    UnknownUserError,
    utc_now,
)
from .validation import check_idempotency_key, check_items, check_user_id


class UserStoreBase(MemoryVectors):
    """Users, versioned personas, append-only interactions, memory vectors and API keys over one database."""

    location: str
    """Where the store lives (a file path or a URL without its password), for messages."""

    # --- what a backend provides ---

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def _write(self):
        raise NotImplementedError

    def _lock_user(self, c: Any, user_id: str) -> bool:
        """Inside a write: whether the user exists (a backend may lock its row until commit)."""
        return c.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone() is not None

    def _lock_appends(self, c: Any) -> None:
        """Inside a write, before taking interaction ids (SQLite's BEGIN IMMEDIATE already serialises writers)."""

    def delete_user(self, user_id: str) -> dict[str, int]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- users ---

    def _unknown(self, user_id: str) -> UnknownUserError:
        # no location or user count: the message may reach an API client (the CLI names the store itself)
        return UnknownUserError(f"unknown user {user_id!r} (create it with `pplug user create`)")

    def _require(self, user_id: str) -> None:
        if not self.has_user(user_id):
            raise self._unknown(user_id)

    def has_user(self, user_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM users WHERE user_id = ?", (user_id,)))

    def users(self) -> list[str]:
        """All user ids, sorted."""
        return [r[0] for r in self._read("SELECT user_id FROM users ORDER BY user_id")]

    def user_version(self, user_id: str) -> tuple | None:
        """A token that changes whenever the user's history or persona changes (None: no such user).

        One query, cheap enough to check per request: a server replica compares it with the token its cached
        soft-prompt input was built under, so a write through any replica sharing the store is seen at once.
        Interaction ids and persona versions only grow, and a user erased and created again under the same id
        has a new creation time.
        """
        rows = self._read(
            "SELECT u.created_at, (SELECT COALESCE(MAX(id), 0) FROM interactions WHERE user_id = u.user_id), "
            "(SELECT MAX(version) FROM personas WHERE user_id = u.user_id) FROM users u WHERE u.user_id = ?",
            (user_id,),
        )
        return (str(rows[0][0]), int(rows[0][1]), int(rows[0][2] or 0)) if rows else None

    def user_task(self, user_id: str) -> str | None:
        """The task given when the user was created (None if not given)."""
        rows = self._read("SELECT task FROM users WHERE user_id = ?", (user_id,))
        if not rows:
            raise self._unknown(user_id)
        return rows[0][0]

    def create_user(
        self, user_id: str, persona: Persona | dict | None = None, task: str | None = None, message: str = "",
        api_key_sha256: str | None = None,
    ) -> Persona:
        """Add a user with persona version 1; returns the stored persona.

        `identity.user_id` is set to `user_id` (a different value is an error) and `memory.long_term`
        defaults to "pplug-store:<user_id>" (this store's memory index). `api_key_sha256`: the user's API key
        hash (`set_api_key_hash`), recorded in the same transaction (a crash never leaves a user without it).

        Raises:
            DuplicateUserError: the user exists.
            InvalidInputError: `user_id` breaks `pplug.store.validation.USER_ID_PATTERN`.
        """
        check_user_id(user_id)
        if task is not None:
            from pplug.core.tasks import get_task

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
            now = utc_now()
            # ON CONFLICT rather than a check first: two replicas creating one id at once get one winner
            cur = c.execute("INSERT INTO users VALUES (?, ?, ?) ON CONFLICT (user_id) DO NOTHING", (user_id, now, task))
            if cur.rowcount != 1:
                raise DuplicateUserError(f"user {user_id!r} already exists")
            c.execute(
                "INSERT INTO personas VALUES (?, 1, ?, 'create', ?, ?, ?)",
                (user_id, now, message, json.dumps(doc, sort_keys=True), json.dumps(diff({}, doc))),
            )
            if api_key_sha256 is not None:
                c.execute("INSERT INTO api_keys VALUES (?, ?, ?)", (user_id, api_key_sha256, now))
        return p

    # --- API keys (pplug serve) ---

    def set_api_key_hash(self, user_id: str, key_sha256: str) -> None:
        """Record the sha256 (hex) of the user's API key, replacing an earlier one."""
        with self._write() as c:
            if not self._lock_user(c, user_id):
                raise self._unknown(user_id)
            c.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE "
                "SET key_sha256 = excluded.key_sha256, created_at = excluded.created_at",
                (user_id, key_sha256, utc_now()),
            )

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
        if not rows:  # erased since the check
            raise self._unknown(user_id)
        return Persona.from_dict(json.loads(rows[0][0]), source=f"stored persona of {user_id}")

    def persona_version(self, user_id: str) -> int:
        """Latest persona version number (1 after create)."""
        version = self._read("SELECT MAX(version) FROM personas WHERE user_id = ?", (user_id,))[0][0]
        if version is None:  # no such user (every user has version 1), or erased since a check
            raise self._unknown(user_id)
        return int(version)

    def update_persona(self, user_id: str, persona: Persona, source: str = "manual", message: str = "") -> int:
        """Record `persona` as a new version (with its diff) unless nothing changed; returns the version."""
        new = persona.validated(f"persona of {user_id}").to_dict()  # a Persona built in code skips from_dict
        with self._write() as c:
            if not self._lock_user(c, user_id):
                raise self._unknown(user_id)
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
        idempotency_key: str | None = None,
    ) -> list[int]:
        """Append items (one transaction) and, optionally, their memory embeddings; returns their ids.

        Args:
            user_id: an existing user.
            items: LaMP profile items (JSON-serialisable dicts), oldest first.
            task: task the items belong to (default: the user's task).
            embeddings: (N, dim) vectors of the items' history texts, stored as long-term memory.
            encoder: identity of the encoder that produced `embeddings` (required with them).
            idempotency_key: see `append_history`.

        Raises:
            InvalidInputError: an item breaks the rules of `pplug.store.validation` for `task` (nothing is written).
        """
        return self.append_history(user_id, items, task, embeddings, encoder, idempotency_key=idempotency_key).ids

    def append_history(
        self,
        user_id: str,
        items: Sequence[dict],
        task: str | None = None,
        embeddings: np.ndarray | Any | None = None,
        encoder: str | None = None,
        *,
        refresh: Callable[[Persona, list[dict]], Persona] | None = None,
        message: str = "",
        idempotency_key: str | None = None,
    ) -> Appended:
        """One history upload in ONE transaction: the items, their memory vectors, the persona refresh and the
        idempotency record commit together or not at all (a crash at any point leaves all or none of them).

        Args:
            user_id, items, task, embeddings, encoder: as `add_interactions`.
            refresh: (latest persona, all of the user's items of `task` including the new ones, oldest first)
                -> the refreshed persona, recorded as a new "derived" version (with `message`) when it differs.
            idempotency_key: the client's key of this upload (`check_idempotency_key`): when the user already
                has it, nothing is written and the first upload's result comes back (`replayed`); with other
                items or another task it is an `IdempotencyKeyReusedError`.

        Raises:
            UnknownUserError: no such user (also when it is erased while this waits for the write lock).
            InvalidInputError: a bad item or key (nothing is written).
        """
        check_user_id(user_id)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        if task is None:
            task = self.user_task(user_id)
        rows = check_items(items, task)  # every item, before the transaction: one bad item writes nothing
        vecs = None
        if embeddings is not None:
            if encoder is None:
                raise StoreError("add_interactions: `encoder` (identity) is required with `embeddings`")
            vecs = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, np.float32)
            if vecs.ndim != 2 or len(vecs) != len(items):
                raise StoreError(f"add_interactions: {len(items)} items but embeddings of shape {tuple(vecs.shape)}")
        fingerprint = hashlib.sha256(json.dumps({"task": task, "items": rows}, ensure_ascii=False, sort_keys=True)
                                     .encode("utf-8")).hexdigest()
        ids: list[int] = []
        with self._write() as c:
            if not self._lock_user(c, user_id):  # locked from here: an erasure waits for this commit, or wins
                raise self._unknown(user_id)
            if idempotency_key is not None:
                seen = c.execute("SELECT request_sha256, result FROM idempotency WHERE user_id = ? AND key = ?",
                                 (user_id, idempotency_key)).fetchone()
                if seen is not None:
                    if seen[0] != fingerprint:
                        raise IdempotencyKeyReusedError(
                            f"idempotency key {idempotency_key!r} was used for another upload of user {user_id!r}")
                    done = json.loads(seen[1])
                    return Appended(done["ids"], done["persona_version"], done["persona_diff"], replayed=True)
            self._lock_appends(c)
            now = utc_now()
            for _, row in zip(items, rows):  # walks `items` again: the crash test stalls a sequence inside this loop
                cur = c.execute(
                    "INSERT INTO interactions (user_id, created_at, task, item) VALUES (?, ?, ?, ?) RETURNING id",
                    (user_id, now, task, json.dumps(row, ensure_ascii=False, sort_keys=True)),
                )
                ids.append(int(cur.fetchone()[0]))
            if vecs is not None:
                self._insert_memory(c, user_id, ids, vecs, encoder)
            version, ops = self._refresh_persona(c, user_id, task, refresh, message)
            if idempotency_key is not None:
                c.execute("INSERT INTO idempotency VALUES (?, ?, ?, ?, ?)",
                          (user_id, idempotency_key, now, fingerprint,
                           json.dumps({"ids": ids, "persona_version": version, "persona_diff": ops})))
        return Appended(ids, version, ops)

    def _refresh_persona(self, c: Any, user_id: str, task: str | None, refresh: Any, message: str
                         ) -> tuple[int, list[dict]]:
        """Inside a write: record `refresh`'s persona as a new version if it changed; (version, diff)."""
        version, doc = c.execute(
            "SELECT version, document FROM personas WHERE user_id = ? ORDER BY version DESC LIMIT 1", (user_id,)
        ).fetchone()
        if refresh is None:
            return int(version), []
        sql = "SELECT item FROM interactions WHERE user_id = ? AND " + ("task = ?" if task else "task IS NULL")
        rows = c.execute(sql + " ORDER BY id", (user_id, task) if task else (user_id,)).fetchall()
        old = json.loads(doc)
        new = refresh(Persona.from_dict(old, source=f"persona of {user_id}"), [json.loads(r[0]) for r in rows])
        new_doc = new.validated(f"refreshed persona of {user_id}").to_dict()
        ops = diff(old, new_doc)
        if not ops:
            return int(version), []
        c.execute("INSERT INTO personas VALUES (?, ?, ?, 'derived', ?, ?, ?)",
                  (user_id, version + 1, utc_now(), message, json.dumps(new_doc, sort_keys=True), json.dumps(ops)))
        return int(version) + 1, ops

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
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) AS recent ORDER BY id"
            params.append(int(limit))
        else:
            sql += " ORDER BY id"
        return [Interaction(int(i), u, t, k, json.loads(it)) for i, u, t, k, it in self._read(sql, params)]

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
        rows = self._read(sql + " ORDER BY id", params)
        return [Interaction(int(i), u, t, k, json.loads(it)) for i, u, t, k, it in rows]


__all__ = ["UserStoreBase"]
