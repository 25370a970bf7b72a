"""PostgresStore: the user store in a PostgreSQL database, shared by several `pplug serve` replicas.

The same users, versioned personas, append-only interactions, memory vectors and API keys as the SQLite
`UserStore` (`pplug.store.base` holds the rules; `pplug.store.pg_schema` the migrations). What PostgreSQL adds:

- Many writers at once. A write locks its user's row (`SELECT ... FOR UPDATE`), so two replicas updating
  one persona queue up instead of both writing version n+1; appends also take one advisory lock, so
  interaction ids commit in id order and a watermark (`interactions_since`) never skips a late commit.
- Memory search in the database when the server has pgvector (`memory_search == "pgvector"`: exact cosine
  over the user's rows, `ORDER BY emb <=> query`), else the faiss index of `pplug.store.memory` built per
  user from the stored vectors: both rank the same float16-rounded vectors, so the top-k agree.

Durability is the server's (a commit is on disk when it returns, with PostgreSQL's default
`synchronous_commit=on`). Erasure deletes every row of the user in one transaction and VACUUMs the tables,
so no reader sees them and their space is reclaimed; copies in the server's WAL and in backups last until
those are recycled, which the database operator controls (SQLite's store zeroes its own pages instead).

Needs psycopg 3 (`pip install "psycopg[binary]"`, in pplug's dependencies).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .base import UserStoreBase
from .pg_schema import APPEND_LOCK, META, MIGRATE_LOCK, PG_MIGRATIONS, PG_SCHEMA_VERSION
from .schema import StoreError


def redacted(url: str) -> str:
    """The URL as shown in messages: user, host, port and database, never the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        d = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a malformed URL is reported by connect; here only the scheme is safe
        return "postgresql://..."
    port = f":{d['port']}" if d.get("port") else ""
    user = f"{d['user']}@" if d.get("user") else ""
    return f"postgresql://{user}{d.get('host', '')}{port}/{d.get('dbname', '')}"


def _vector_text(v: np.ndarray) -> str:
    """pgvector's text form; float32 values print exactly (repr of the float64 they widen to)."""
    return "[" + ",".join(repr(float(x)) for x in np.asarray(v, np.float32).ravel()) + "]"


class _Conn:
    """The transaction's connection as `UserStoreBase` uses it: `?` placeholders (the SQL has no literal %)."""

    def __init__(self, conn: Any):
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), tuple(params))


class PostgresStore(UserStoreBase):
    """The user store in PostgreSQL.

    Args:
        url: a libpq URL, postgresql://user:password@host:port/dbname (a database pplug may create tables in).
        create: False -> a database without a pplug store is a StoreError (for read-only commands).
        timeout: seconds to wait for connecting and for another writer's row lock.
        pgvector: None -> memory search through pgvector when the server has the extension, else faiss;
            False -> always faiss; True -> pgvector or a StoreError.

    One connection per object, guarded by an internal lock (the HTTP threads of one replica take turns;
    replicas run in parallel). A dropped connection is opened again on the next call.
    """

    def __init__(self, url: str, create: bool = True, timeout: float = 30.0, pgvector: bool | None = None):
        import psycopg

        self.url, self.timeout = url, float(timeout)
        self.location = redacted(url)
        self._lock = threading.RLock()
        self._indexes: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._conn = self._connect()
        try:
            self._migrate(create)
            self._has_emb = self._setup_pgvector(pgvector)
        except (psycopg.Error, StoreError) as e:
            self._conn.close()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"{self.location}: not a usable pplug store ({str(e).strip().splitlines()[0]})") from None
        self.memory_search = "pgvector" if self._has_emb and pgvector is not False else "faiss"
        """How `recall` ranks memory: "pgvector" (in the database) or "faiss" (per user, in this process)."""

    # --- plumbing ---

    def _connect(self) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.timeout)))
        except psycopg.Error as e:
            raise StoreError(f"{self.location}: cannot connect ({str(e).strip().splitlines()[-1]})") from None
        conn.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
        return conn

    def _connection(self) -> Any:
        if self._conn.closed or self._conn.broken:  # the server restarted or the network dropped us
            self._conn = self._connect()
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[_Conn]:
        """One transaction (a nested use is a savepoint of the outer one)."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                yield _Conn(conn)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return _Conn(self._connection()).execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _lock_user(self, c: Any, user_id: str) -> bool:
        return c.execute("SELECT 1 FROM users WHERE user_id = ? FOR UPDATE", (user_id,)).fetchone() is not None

    def _lock_appends(self, c: Any) -> None:
        c.execute("SELECT pg_advisory_xact_lock(?)", (APPEND_LOCK,))

    # --- schema ---

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        return int(self._read("SELECT value FROM meta WHERE key = 'schema_version'")[0][0])

    def _migrate(self, create: bool) -> None:
        conn = self._conn
        if not create and conn.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            raise StoreError(f"{self.location}: no pplug user store in this database (create a user first)")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            conn.execute(META)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current > PG_SCHEMA_VERSION:
                raise StoreError(f"{self.location}: store schema version {current} is newer than this pplug "
                                 f"({PG_SCHEMA_VERSION}); upgrade pplug to use it")
            for version in sorted(v for v in PG_MIGRATIONS if v > current):
                conn.execute(PG_MIGRATIONS[version])  # several statements: no parameters, one script
                conn.execute("INSERT INTO meta VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE "
                             "SET value = excluded.value", (str(version),))

    def _setup_pgvector(self, pgvector: bool | None) -> bool:
        """Whether `memory.emb` exists (created here when the server has pgvector and it is wanted)."""
        import psycopg

        conn = self._conn
        if pgvector is not False:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
                try:
                    with conn.transaction():  # a savepoint: a missing extension must not end the transaction
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                        conn.execute("ALTER TABLE memory ADD COLUMN IF NOT EXISTS emb vector")
                except psycopg.Error as e:
                    if pgvector:
                        raise StoreError(f"{self.location}: pgvector is not available "
                                         f"({str(e).strip().splitlines()[0]})") from None
        return conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'memory' AND column_name = 'emb' "
            "AND table_schema = current_schema()"
        ).fetchone() is not None

    # --- memory ---

    def _insert_memory(self, c: Any, user_id: str, ids: Sequence[int], vecs: np.ndarray, encoder: str) -> None:
        if not self._has_emb:
            return super()._insert_memory(c, user_id, ids, vecs, encoder)
        for i, v in zip(ids, vecs):
            half = v.astype(np.float16)
            c.execute(
                "INSERT INTO memory (interaction_id, encoder, user_id, vec, emb) VALUES (?, ?, ?, ?, ?::vector) "
                "ON CONFLICT (interaction_id, encoder) DO UPDATE "
                "SET user_id = excluded.user_id, vec = excluded.vec, emb = excluded.emb",
                (int(i), encoder, user_id, half.tobytes(), _vector_text(half)),
            )

    def _search(self, user_id: str, encoder: str, query: Any, k: int) -> list[tuple[int, float]]:
        if self.memory_search != "pgvector":
            return super()._search(user_id, encoder, query, k)
        # rows written by a replica that ran before the column existed: fill them in first
        missing = self._read("SELECT interaction_id, vec FROM memory WHERE user_id = ? AND encoder = ? "
                             "AND emb IS NULL", (user_id, encoder))
        if missing:
            with self._write() as c:
                for i, vec in missing:
                    c.execute("UPDATE memory SET emb = ?::vector WHERE interaction_id = ? AND encoder = ?",
                              (_vector_text(np.frombuffer(vec, np.float16)), i, encoder))
        q = _vector_text(np.asarray(query.detach().cpu() if hasattr(query, "detach") else query, np.float32))
        rows = self._read(
            "SELECT interaction_id, 1 - (emb <=> ?::vector) FROM memory WHERE user_id = ? AND encoder = ? "
            "ORDER BY emb <=> ?::vector, interaction_id LIMIT ?",
            (q, user_id, encoder, q, int(k)),
        )
        return [(int(i), float(s)) for i, s in rows]

    # --- erasure ---

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Erase a user: interactions, memory vectors, persona versions, API key and the user row.

        One transaction (all or nothing); the append-only trigger admits the deletes only while this
        transaction's `pplug.erasing` setting names the user. The tables are VACUUMed afterwards (the
        dead rows' space is reclaimed); this process's faiss index of the user is dropped too.

        Returns:
            Counts of what was removed: {"interactions", "memory_vectors", "persona_versions", "api_keys",
            "idempotency_keys", "users", "faiss_indexes"}.

        Raises:
            UnknownUserError: no such user.
        """
        counts: dict[str, int] = {}
        with self._lock:
            with self._write() as c:
                if not self._lock_user(c, user_id):
                    raise self._unknown(user_id)
                c.execute("SELECT set_config('pplug.erasing', ?, true)", (user_id,))
                for name, table in (("memory_vectors", "memory"), ("interactions", "interactions"),
                                    ("persona_versions", "personas"), ("api_keys", "api_keys"),
                                    ("idempotency_keys", "idempotency"), ("users", "users")):
                    counts[name] = int(c.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)).rowcount)
            self._connection().execute("VACUUM memory, interactions, personas, api_keys, idempotency, users")
            dropped = [k for k in self._indexes if k[0] == user_id]
            for k in dropped:
                del self._indexes[k]
        counts["faiss_indexes"] = len(dropped)
        return counts


__all__ = ["PostgresStore", "redacted"]
