"""UserStore: users, versioned personas with diffs, append-only history, memory recall, crash safety."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pplug.store.schema import SCHEMA_VERSION, DuplicateUserError, StoreError, UnknownUserError, default_store_path
from pplug.store.sqlite import UserStore


class BagOfWordsEncoder:
    """A deterministic stand-in for HistoryEncoder: hashed bag of words, L2-normalised (no model)."""

    identity = "bow-test"
    dim = 64

    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for w in t.lower().replace('"', " ").split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return torch.nn.functional.normalize(out, dim=-1)


@pytest.fixture
def store(tmp_path):
    s = UserStore(tmp_path / "store.sqlite")
    yield s
    s.close()


def test_default_path_honours_pplug_home(monkeypatch, tmp_path):
    monkeypatch.delenv("PPLUG_HOME", raising=False)
    assert default_store_path().name == "pplug_store.sqlite"
    monkeypatch.setenv("PPLUG_HOME", str(tmp_path))
    assert default_store_path() == tmp_path / "pplug_store.sqlite"


def test_wal_mode_and_integrity(store):
    assert store._read("PRAGMA journal_mode")[0][0] == "wal"
    assert store.integrity_check() == "ok"


def test_user_round_trip(tmp_path):
    path = tmp_path / "s.sqlite"
    with UserStore(path) as s:
        p = s.create_user("ana", {"identity": {"name": "Ana"}, "personality": {"interests": ["jazz"]}}, task="lamp-3")
        assert p.identity.user_id == "ana" and p.memory.long_term == "pplug-store:ana"
        ids = s.add_interactions("ana", [{"id": "r1", "text": "good", "score": "4"}, {"text": "bad", "score": "1"}])
    with UserStore(path) as s:  # reopen: everything persisted
        assert s.users() == ["ana"]
        assert s.user_task("ana") == "LaMP_3"
        assert s.persona("ana").personality.interests == ["jazz"]
        rows = s.history("ana")
        assert [r.id for r in rows] == ids
        assert rows[0].item == {"id": "r1", "text": "good", "score": "4"}
        assert rows[1].task == "LaMP_3"
        assert s.history_items("ana", limit=1) == [{"text": "bad", "score": "1"}]
        assert s.count_interactions("ana", after_id=ids[0]) == 1


def test_clear_errors(store):
    store.create_user("ana")
    with pytest.raises(DuplicateUserError, match="user 'ana' already exists"):
        store.create_user("ana")
    with pytest.raises(UnknownUserError, match="unknown user 'bob'"):
        store.add_interactions("bob", [{"text": "x"}])
    with pytest.raises(UnknownUserError, match="unknown user 'bob'"):
        store.persona("bob")
    with pytest.raises(StoreError, match="invalid user id"):
        store.create_user(" ")
    with pytest.raises(StoreError, match="field 'identity.user_id'"):
        store.create_user("carl", {"identity": {"user_id": "someone-else"}})
    assert not store.has_user("carl")  # the failed create left nothing behind


def test_read_only_open_of_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no user store"):
        UserStore(tmp_path / "missing.sqlite", create=False)


def test_interactions_are_append_only(store):
    store.create_user("ana")
    store.add_interactions("ana", [{"text": "x"}])
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._conn.execute("UPDATE interactions SET item = '{}'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._conn.execute("DELETE FROM interactions")
    assert store.count_interactions("ana") == 1


def test_versioned_persona_with_diff(store):
    store.create_user("ana", {"identity": {"name": "Ana"}})
    p = store.persona("ana")
    p.demographics.location = "Lisbon"
    p.identity.name = "Ana M."
    assert store.update_persona("ana", p, source="manual", message="moved") == 2
    assert store.update_persona("ana", p) == 2  # unchanged: no new version
    log = store.persona_log("ana")
    assert [c.version for c in log] == [1, 2]
    assert log[1].source == "manual" and log[1].message == "moved"
    assert {"op": "replace", "path": "/identity/name", "old": "Ana", "value": "Ana M."} in log[1].diff
    assert {"op": "add", "path": "/demographics", "value": {"location": "Lisbon"}} in log[1].diff
    assert store.persona("ana", version=1).identity.name == "Ana"
    assert store.persona("ana").demographics.location == "Lisbon"
    assert store.persona_version("ana") == 2


def test_recall_long_term_memory(store):
    enc = BagOfWordsEncoder()
    store.create_user("ana", task="LaMP_3")
    items = [
        {"text": "the battery died quickly", "score": "1"},
        {"text": "beautiful screen colours", "score": "5"},
        {"text": "battery lasts two days", "score": "4"},
    ]
    texts = [f'{it["score"]} is the score for "{it["text"]}"' for it in items]
    store.add_interactions("ana", items[:2], embeddings=enc.encode(texts[:2]), encoder=enc.identity)
    store.add_interactions("ana", items[2:])  # no vectors: recall backfills them
    hits = store.recall("ana", "how is the battery", k=2, encoder=enc)
    assert [h.item["text"] for h, _ in hits] == ["the battery died quickly", "battery lasts two days"]
    assert hits[0][1] >= hits[1][1]
    ids, vecs = store.memory_vectors("ana", enc.identity)
    assert len(ids) == 3 and vecs.shape == (3, enc.dim)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-2)


def test_readers_are_not_blocked_by_a_writer(tmp_path):
    path = tmp_path / "s.sqlite"
    writer, reader = UserStore(path), UserStore(path, timeout=1.0)
    writer.create_user("ana")
    with writer._write() as c:  # an open write transaction
        c.execute("INSERT INTO interactions (user_id, created_at, task, item) VALUES ('ana', 't', NULL, '{}')")
        assert reader.count_interactions("ana") == 0  # reads the last committed state at once
    assert reader.count_interactions("ana") == 1
    writer.close()
    reader.close()


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pplug.store import UserStore

    class SlowItems(list):
        # The store iterates items twice (validate, then insert); halfway through the insert pass we
        # announce it and stall, so the parent's SIGKILL lands inside an open transaction.
        def __init__(self, items, stall):
            super().__init__(items)
            self.passes, self.stall = 0, stall
        def __iter__(self):
            self.passes += 1
            for i, x in enumerate(list.__iter__(self)):
                if self.stall and self.passes == 2 and i == len(self) // 2:
                    print("MID", flush=True)
                    time.sleep(60)
                yield x

    store = UserStore(sys.argv[1])
    if not store.has_user("u"):
        store.create_user("u", task="LaMP_3")
    batch, n = 50, 0
    for b in range(1000):
        items = [{"id": f"{b}-{i}", "text": "x" * 200, "score": "3"} for i in range(batch)]
        store.add_interactions("u", SlowItems(items, stall=(b == 5)))
        n += batch
        print(f"COMMITTED {n}", flush=True)
    """
)


def test_sigkill_mid_batch_loses_nothing_committed(tmp_path):
    path = tmp_path / "crash.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    committed = 0
    try:
        for line in proc.stdout:
            if line.startswith("COMMITTED"):
                committed = int(line.split()[1])
            elif line.startswith("MID"):
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert committed == 250  # five full batches were acknowledged before the kill
    with UserStore(path) as s:
        assert s.integrity_check() == "ok"
        rows = s.history("u")
        assert len(rows) == committed  # every committed row is there, nothing of the killed batch
        assert rows[-1].item["id"] == "4-49"
        s.add_interactions("u", [{"text": "after", "score": "5"}])  # the store is writable again
        assert s.count_interactions("u") == committed + 1


def test_delete_user_erases_in_one_transaction_and_keeps_others(store):
    store.create_user("ana", task="LaMP_3")
    store.create_user("bob", task="LaMP_3")
    store.add_interactions("ana", [{"text": "a1", "score": "1"}, {"text": "a2", "score": "2"}],
                           embeddings=np.ones((2, 4)), encoder="enc")
    store.add_interactions("bob", [{"text": "b1", "score": "3"}])
    from pplug.persona.schema import Persona

    store.update_persona("ana", Persona.from_dict({"identity": {"name": "Ana"}}))
    store.set_api_key_hash("ana", "ab" * 32)
    assert store.user_for_api_key_hash("ab" * 32) == "ana"
    counts = store.delete_user("ana")
    assert counts == {"memory_vectors": 2, "interactions": 2, "persona_versions": 2, "api_keys": 1, "users": 1,
                      "idempotency_keys": 0, "faiss_indexes": 0}
    assert not store.has_user("ana") and store.user_for_api_key_hash("ab" * 32) is None
    assert store.count_interactions("bob") == 1 and store.last_user_interaction_id("bob") == 3
    for table in ("personas", "interactions", "memory", "api_keys", "erasures"):
        assert store._conn.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id = 'ana'").fetchone()[0] == 0
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):  # plain deletes are still refused
        store._conn.execute("DELETE FROM interactions")
    with pytest.raises(UnknownUserError):
        store.delete_user("ana")
    assert store.integrity_check() == "ok"


def test_schema_1_store_is_migrated_for_erasure(tmp_path):
    path = tmp_path / "old.sqlite"
    with UserStore(path) as s:  # turn it back into a schema-1 file: the old trigger refused every DELETE
        s._conn.executescript(
            "DROP TRIGGER interactions_delete_only_erasure; DROP TABLE api_keys; DROP TABLE erasures;"
            "CREATE TRIGGER interactions_no_delete BEFORE DELETE ON interactions "
            "BEGIN SELECT RAISE(ABORT, 'interactions are append-only'); END;"
            "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
        )
        s.create_user("ana", task="LaMP_3")
        s.add_interactions("ana", [{"text": "a1", "score": "1"}])
    with UserStore(path) as s:
        assert s._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert s.delete_user("ana")["interactions"] == 1
