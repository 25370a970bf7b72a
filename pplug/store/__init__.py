"""The user store: the rules every backend shares (`base`), SQLite (`sqlite`) and PostgreSQL (`postgres`)
backends, their schemas, the long-term memory (`memory`) and the input rules (`validation`); `open_store`
opens what `--store` names.

May import: core, encode, persona.
"""

from __future__ import annotations

import os
from typing import Any

from .base import UserStoreBase
from .schema import StoreError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(store: str | os.PathLike | None = None, create: bool = True, timeout: float = 30.0) -> UserStoreBase:
    """The user store named by `--store`: a SQLite file (a path, or sqlite:///relative, sqlite:////absolute),
    or a PostgreSQL database (postgresql://user:password@host:port/dbname, psycopg's libpq URL).

    Args:
        store: the path or URL; None -> `default_store_path()`.
        create: False -> a missing SQLite file is a FileNotFoundError, a database without a pplug store a
            StoreError (for read-only commands).
        timeout: seconds to wait for the database (another writer, or connecting).
    """
    if isinstance(store, str) and store.startswith(POSTGRES_SCHEMES):
        from .postgres import PostgresStore

        return PostgresStore(store, create=create, timeout=timeout)
    if isinstance(store, str) and store.startswith("sqlite:"):
        if not store.startswith("sqlite:///") or store == "sqlite:///":
            raise StoreError(f"{store}: a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        store = store[len("sqlite:///"):]
    from .sqlite import UserStore

    return UserStore(store, timeout=timeout, create=create)


def __getattr__(name: str) -> Any:  # pplug 0.1's names of this module, deprecated
    from pplug._moved import folder_name

    return folder_name(__name__, name)
