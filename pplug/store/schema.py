"""The SQLite schema of the user store (`pplug.store`), its errors and the rows it returns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 3
"""2: api_keys + erasures tables; the DELETE trigger on interactions admits `delete_user` (1 refused all).
3: the idempotency table (history uploads retried with the same key are stored once)."""
STORE_FILENAME = "pplug_store.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    user_id    TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    task       TEXT
);
CREATE TABLE IF NOT EXISTS personas (
    user_id    TEXT NOT NULL REFERENCES users(user_id),
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    source     TEXT NOT NULL,
    message    TEXT NOT NULL DEFAULT '',
    document   TEXT NOT NULL,
    diff       TEXT NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE IF NOT EXISTS interactions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL REFERENCES users(user_id),
    created_at TEXT NOT NULL,
    task       TEXT,
    item       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS interactions_user ON interactions(user_id, id);
CREATE TABLE IF NOT EXISTS memory (
    interaction_id INTEGER NOT NULL REFERENCES interactions(id),
    encoder        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    vec            BLOB NOT NULL,
    PRIMARY KEY (interaction_id, encoder)
);
CREATE INDEX IF NOT EXISTS memory_user ON memory(user_id, encoder);
CREATE TRIGGER IF NOT EXISTS interactions_no_update BEFORE UPDATE ON interactions
BEGIN SELECT RAISE(ABORT, 'interactions are append-only'); END;
CREATE TABLE IF NOT EXISTS api_keys (
    user_id    TEXT PRIMARY KEY REFERENCES users(user_id),
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    user_id        TEXT NOT NULL REFERENCES users(user_id),
    key            TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    result         TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE TABLE IF NOT EXISTS erasures (
    user_id TEXT PRIMARY KEY
);
DROP TRIGGER IF EXISTS interactions_no_delete;
CREATE TRIGGER IF NOT EXISTS interactions_delete_only_erasure BEFORE DELETE ON interactions
WHEN NOT EXISTS (SELECT 1 FROM erasures WHERE user_id = OLD.user_id)
BEGIN SELECT RAISE(ABORT, 'interactions are append-only (only UserStore.delete_user erases a user)'); END;
"""


class StoreError(ValueError):
    """A user-facing store error (one line)."""


class UnknownUserError(StoreError, KeyError):
    """The user id is not in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateUserError(StoreError):
    """The user id already exists."""


class IdempotencyKeyReusedError(StoreError):
    """An idempotency key already recorded for another upload of the same user (different items or task)."""


def default_store_path() -> Path:
    """`$PPLUG_HOME/pplug_store.sqlite` if PPLUG_HOME is set, else `./pplug_store.sqlite`."""
    home = os.environ.get("PPLUG_HOME")
    return Path(home) / STORE_FILENAME if home else Path(STORE_FILENAME)


def utc_now() -> str:
    """The current UTC time as stored (ISO-8601, microseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Interaction:
    """One stored interaction (a LaMP profile item the user produced)."""

    id: int
    """Store-wide increasing id (the order of arrival)."""
    user_id: str
    created_at: str
    """UTC ISO-8601 time it was stored."""
    task: str | None
    item: dict
    """The profile item, e.g. {"id": "r7", "text": "...", "score": "4"}."""


@dataclass(frozen=True)
class Appended:
    """What one history upload (`UserStoreBase.append_history`) stored, in one transaction."""

    ids: list[int]
    """Store ids of the items (the first upload's ids when `replayed`)."""
    persona_version: int
    """The user's persona version after the upload's refresh (the latest version when no refresh was asked)."""
    persona_diff: list[dict]
    """JSON diff of the refresh ([] if none)."""
    replayed: bool = False
    """True: the idempotency key was recorded already; nothing was written and this is the first upload's result."""


@dataclass(frozen=True)
class PersonaChange:
    """One entry of a user's persona change log."""

    version: int
    created_at: str
    source: str
    """Who made the change: "create", "derived", "proposer", "manual", ..."""
    message: str
    diff: list[dict]
    """JSON diff from the previous version (RFC 6902-style ops with "old" values)."""


__all__ = ["Appended", "DuplicateUserError", "IdempotencyKeyReusedError", "Interaction", "PersonaChange", "SCHEMA_VERSION", "STORE_FILENAME", "SCHEMA",
           "StoreError", "UnknownUserError", "default_store_path", "utc_now"]
