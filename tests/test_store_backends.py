"""The user store on both backends (SQLite and a real PostgreSQL, see `store_url` in conftest): the same
semantics through `open_store`, versioned migrations, one-line refusal of a newer store, erasure, writers
in parallel, and the same memory top-k from SQLite+faiss, PostgreSQL+pgvector and PostgreSQL+faiss."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_store import BagOfWordsEncoder

from pplug.persona.schema import Persona
from pplug.store import open_store
from pplug.store.schema import DuplicateUserError, StoreError, UnknownUserError
from pplug.store.sqlite import UserStore


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def _raw(store, sql: str) -> None:
    with store._write() as c:
        c.execute(sql)


def test_users_personas_history_and_keys_behave_alike(store):
    store.create_user("ana", {"identity": {"name": "Ana"}}, task="LaMP_3")
    with pytest.raises(DuplicateUserError, match="already exists"):
        store.create_user("ana")
    with pytest.raises(UnknownUserError, match="unknown user 'bob'"):
        store.persona("bob")
    v1 = store.user_version("ana")
    ids = store.add_interactions("ana", [{"text": f"t{i}", "score": str(1 + i % 5)} for i in range(5)])
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [r.item["text"] for r in store.history("ana", limit=2)] == ["t3", "t4"]
    assert [r.id for r in store.history("ana", after_id=ids[2])] == ids[3:]
    assert store.count_interactions("ana") == 5 and store.count_by_task("ana") == {"LaMP_3": 5}
    assert store.last_user_interaction_id("ana") == ids[-1] == store.last_interaction_id()
    assert [r.id for r in store.interactions_since(ids[0])] == ids[1:]
    v2 = store.user_version("ana")
    p = store.persona("ana")
    p.identity.name = "Ana M."
    assert store.update_persona("ana", p, message="renamed") == 2
    assert store.update_persona("ana", p) == 2  # nothing changed: no new version
    assert [c.version for c in store.persona_log("ana")] == [1, 2]
    assert store.persona("ana", version=1).identity.name == "Ana"
    v3 = store.user_version("ana")
    assert len({v1, v2, v3}) == 3 and store.user_version("nobody") is None
    store.set_api_key_hash("ana", "ab" * 32)
    store.set_api_key_hash("ana", "cd" * 32)  # replaces the first
    assert store.user_for_api_key_hash("cd" * 32) == "ana" and store.user_for_api_key_hash("ab" * 32) is None
    with pytest.raises(UnknownUserError):
        store.add_interactions("bob", [{"text": "x"}])
    assert store.users() == ["ana"]


def test_interactions_are_append_only_and_erasure_is_whole(store):
    store.create_user("ana", task="LaMP_3")
    store.create_user("bob", task="LaMP_3")
    store.add_interactions("ana", [{"text": "a1", "score": "1"}, {"text": "a2", "score": "2"}],
                           embeddings=np.ones((2, 4)), encoder="enc")
    store.add_interactions("bob", [{"text": "b1", "score": "3"}])
    store.set_api_key_hash("ana", "ab" * 32)
    for sql in ("UPDATE interactions SET item = '{}'", "DELETE FROM interactions"):
        with pytest.raises(Exception, match="append-only"):
            _raw(store, sql)
    before = store.user_version("ana")
    assert store.delete_user("ana") == {"memory_vectors": 2, "interactions": 2, "persona_versions": 1,
                                        "api_keys": 1, "users": 1, "idempotency_keys": 0,
                                        "faiss_indexes": 0}
    assert not store.has_user("ana") and store.user_for_api_key_hash("ab" * 32) is None
    assert store.count_interactions("bob") == 1 and store.count_interactions() == 1
    with pytest.raises(Exception, match="append-only"):  # plain deletes are still refused afterwards
        _raw(store, "DELETE FROM interactions")
    with pytest.raises(UnknownUserError):
        store.delete_user("ana")
    store.create_user("ana", task="LaMP_3")  # the same id again is a new user: a new version, no old rows
    assert store.user_version("ana") != before and store.history("ana") == []


def test_migrations_recorded_and_a_newer_store_refused_in_one_line(store_url):
    with open_store(store_url) as s:
        s.create_user("ana")
        _raw(s, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError) as e:
        open_store(store_url)
    msg = str(e.value)
    assert "schema version 99 is newer than this pplug (3)" in msg and "\n" not in msg
    with pytest.raises(StoreError, match="newer"):
        open_store(store_url, create=False)


def test_postgres_migrates_a_fresh_database_once(postgres_url):
    from pplug.store.pg_schema import PG_SCHEMA_VERSION
    from pplug.store.postgres import PostgresStore

    with pytest.raises(StoreError, match="no pplug user store"):
        open_store(postgres_url, create=False)
    a, b = PostgresStore(postgres_url), PostgresStore(postgres_url)  # the second finds it migrated
    assert isinstance(a, PostgresStore) and a.schema_version() == b.schema_version() == PG_SCHEMA_VERSION == 3
    a.create_user("ana")
    assert b.users() == ["ana"] and "password" not in a.location and a.location.startswith("postgresql://")
    a.close(), b.close()


def test_open_store_reads_paths_and_sqlite_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel.sqlite") as s:
        assert isinstance(s, UserStore) and s.path.name == "rel.sqlite"
    with open_store(f"sqlite:///{tmp_path}/abs.sqlite") as s:  # four slashes: an absolute path
        assert s.path == tmp_path / "abs.sqlite"
    with pytest.raises(StoreError, match="SQLite URL"):
        open_store("sqlite://rel.sqlite")
    with pytest.raises(FileNotFoundError):
        open_store("missing.sqlite", create=False)
    with pytest.raises(StoreError, match="cannot connect"):
        open_store("postgresql://nobody@/nodb?host=/nonexistent-socket-dir", timeout=2)


def test_two_store_objects_writing_one_user_at_once_lose_nothing(store_url):
    """Two replicas' stores on one database: appends and persona updates interleave, nothing is lost."""
    stores = [open_store(store_url), open_store(store_url)]
    stores[0].create_user("ana", task="LaMP_3")
    errors = []

    def work(s, w: int) -> None:
        try:
            for i in range(15):
                s.add_interactions("ana", [{"text": f"w{w}-{i}", "score": "3"}])
                p = s.persona("ana")
                p.identity.name = f"writer {w} step {i}"
                s.update_persona("ana", p)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s, w)) for w, s in enumerate(stores)]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    assert not errors
    rows = stores[1].history("ana")
    assert len(rows) == 30 and {r.item["text"] for r in rows} == {f"w{w}-{i}" for w in (0, 1) for i in range(15)}
    assert [c.version for c in stores[1].persona_log("ana")] == list(range(1, 32))  # consecutive, none lost
    [s.close() for s in stores]


def test_postgres_reconnects_after_the_connection_drops(postgres_url):
    import psycopg

    with open_store(postgres_url) as s:
        s.create_user("ana")
        pid = s._read("SELECT pg_backend_pid()")[0][0]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):  # the call that finds the connection dead fails ...
            s.users()
        assert s.users() == ["ana"]  # ... and the next one opens a new connection


def test_memory_top_k_is_the_same_on_sqlite_faiss_pgvector_and_postgres_faiss(tmp_path, postgres_url):
    from pplug.store.postgres import PostgresStore

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((40, 16)).astype(np.float32)
    items = [{"text": f"item {i}", "score": "3"} for i in range(40)]
    sqlite = UserStore(tmp_path / "s.sqlite")
    pg_faiss = PostgresStore(postgres_url, pgvector=False)  # no pgvector column yet: written without it
    for s in (sqlite, pg_faiss):
        s.create_user("ana", task="LaMP_3")
        s.create_user("bob", task="LaMP_3")  # another user's vectors must never be returned
        s.add_interactions("bob", items[:5], embeddings=-vecs[:5], encoder="enc")
        s.add_interactions("ana", items[:30], embeddings=vecs[:30], encoder="enc")
    pg_vector = PostgresStore(postgres_url)  # adds the column; the rows above get their vectors at search
    assert pg_vector.memory_search == "pgvector" and pg_faiss.memory_search == "faiss"
    sqlite.add_interactions("ana", items[30:], embeddings=vecs[30:], encoder="enc")
    pg_vector.add_interactions("ana", items[30:], embeddings=vecs[30:], encoder="enc")
    for q in rng.standard_normal((5, 16)).astype(np.float32):
        want = sqlite._search("ana", "enc", q, 7)
        ana_ids = {r.id for r in sqlite.history("ana")}
        assert len(want) == 7 and {i for i, _ in want} <= ana_ids
        for s in (pg_vector, pg_faiss):
            got = s._search("ana", "enc", q, 7)
            # ids are store-specific; the items they point at are not
            by_id = {r.id: r.item["text"] for r in s.history("ana")}
            sq = {r.id: r.item["text"] for r in sqlite.history("ana")}
            assert [by_id[i] for i, _ in got] == [sq[i] for i, _ in want]
            np.testing.assert_allclose([x for _, x in got], [x for _, x in want], atol=1e-5)
    [s.close() for s in (sqlite, pg_vector, pg_faiss)]


def test_recall_backfills_and_finds_the_same_items_on_both_backends(store):
    enc = BagOfWordsEncoder()
    store.create_user("ana", task="LaMP_3")
    store.add_interactions("ana", [{"text": "jazz trumpet evening", "score": "5"},
                                   {"text": "tax forms due", "score": "1"},
                                   {"text": "late jazz club", "score": "4"}])
    hits = store.recall("ana", "jazz", 2, enc)
    assert {r.item["text"] for r, _ in hits} == {"jazz trumpet evening", "late jazz club"}
    assert store.backfill_memory("ana", enc) == 0  # recall stored the vectors


def test_persona_objects_are_accepted_on_both_backends(store):
    p = store.create_user("ana", Persona.from_dict({"identity": {"name": "Ana"}}))
    assert p.identity.user_id == "ana" and store.persona("ana").memory.long_term == "pplug-store:ana"


def test_pplug_user_commands_take_either_store(store_url, capsys):
    from pplug.cli.main import main

    store_url = store_url.replace("postgres:@", "postgres:s3cret@")  # the test server trusts any password
    assert "s3cret" in store_url or not store_url.startswith("postgresql")
    assert main(["user", "create", "ana", "--store", store_url]) == 0
    assert main(["user", "list", "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert "created user 'ana' in " in out and "ana\t0 interactions\tpersona v1" in out
    assert "s3cret" not in out  # messages name the store without its password
