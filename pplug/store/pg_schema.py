"""The PostgreSQL schema of the user store (`pplug.store.postgres`): versioned migrations, applied on start.

The tables and their meaning are those of the SQLite store (`pplug.store.schema`); the version numbers
follow SQLite's, so version 2 is the first PostgreSQL one. A migration is one SQL script run in the same
transaction as the `meta` update that records it, under an advisory lock, so replicas starting together
apply it once. Add a version by adding an entry to `PG_MIGRATIONS`, never by editing an applied one.

The append-only rule is a trigger as in SQLite; erasure is admitted while the transaction-local setting
`pplug.erasing` names the user (`set_config(..., true)`: no other session ever sees it, and it ends with the
transaction). pgvector, where the server has it, adds `memory.emb` (the same float16-rounded vector) next
to `memory.vec`: an optional column, not a schema version, since a server without the extension serves the
same store through faiss.
"""

from __future__ import annotations

PG_MIGRATIONS: dict[int, str] = {
    2: """
CREATE TABLE users (
    user_id    TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    task       TEXT
);
CREATE TABLE personas (
    user_id    TEXT NOT NULL REFERENCES users(user_id),
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    source     TEXT NOT NULL,
    message    TEXT NOT NULL DEFAULT '',
    document   TEXT NOT NULL,
    diff       TEXT NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE interactions (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(user_id),
    created_at TEXT NOT NULL,
    task       TEXT,
    item       TEXT NOT NULL
);
CREATE INDEX interactions_user ON interactions(user_id, id);
CREATE TABLE memory (
    interaction_id BIGINT NOT NULL REFERENCES interactions(id),
    encoder        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    vec            BYTEA NOT NULL,
    PRIMARY KEY (interaction_id, encoder)
);
CREATE INDEX memory_user ON memory(user_id, encoder);
CREATE TABLE api_keys (
    user_id    TEXT PRIMARY KEY REFERENCES users(user_id),
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE FUNCTION pplug_interactions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('pplug.erasing', true) = OLD.user_id THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'interactions are append-only (only UserStore.delete_user erases a user)';
    END IF;
    RAISE EXCEPTION 'interactions are append-only';
END $$;
CREATE TRIGGER interactions_append_only BEFORE UPDATE OR DELETE ON interactions
FOR EACH ROW EXECUTE FUNCTION pplug_interactions_append_only();
CREATE TRIGGER interactions_no_truncate BEFORE TRUNCATE ON interactions
FOR EACH STATEMENT EXECUTE FUNCTION pplug_interactions_append_only();
""",
    3: """
CREATE TABLE idempotency (
    user_id        TEXT NOT NULL REFERENCES users(user_id),
    key            TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    result         TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
""",
}
PG_SCHEMA_VERSION = max(PG_MIGRATIONS)

META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

MIGRATE_LOCK = 0x70706C7567  # advisory lock keys ("pplug"): migrations,
APPEND_LOCK = MIGRATE_LOCK + 1  # and interaction appends (ids commit in id order)


__all__ = ["APPEND_LOCK", "META", "MIGRATE_LOCK", "PG_MIGRATIONS", "PG_SCHEMA_VERSION"]
