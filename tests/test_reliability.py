"""Reliability of the server, the store and the CLI: a body limit that counts what is read, personas held to
the input rules, erasure races answered 404, add-history as one transaction with idempotency keys (and kill -9
faults), one-line errors for a folder as --store and a hub with a missing adapter folder, one history-item
shape for `pplug generate --history`."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from test_server import ADMIN, run_dir  # noqa: F401  (run_dir: the tiny checkpoint fixture)
from test_store import BagOfWordsEncoder

from pplug.cli.main import main
from pplug.store import open_store

ROOT = Path(__file__).resolve().parents[1]
ITEM = {"text": "a fine record, I liked it", "score": "4"}


def _app(run_dir, store, tmp_path):  # noqa: F811 - run_dir is the imported fixture
    from pplug.serve.app import create_app

    return create_app(run_dir, store, admin_key=ADMIN, device="cpu", reload_interval=3600,
                      embedding_cache=tmp_path / "emb.sqlite")


def _requests(app, *calls: tuple[str, str, dict]) -> list[httpx.Response]:
    """The calls sent at once to the app in process (httpx's ASGI transport streams a body chunk by chunk)."""
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120,
                                     headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
                                     ) as client:
            return await asyncio.gather(*[client.request(m, p, **kw) for m, p, kw in calls])

    return asyncio.run(go())


def _one(app, method: str, path: str, **kw) -> httpx.Response:
    return _requests(app, (method, path, kw))[0]


def _openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def _state(store) -> list[tuple]:
    return [(u, store.count_interactions(u), store.persona_version(u)) for u in store.users()]


@pytest.fixture(scope="module")
def app(run_dir, tmp_path_factory):  # noqa: F811 - run_dir is the imported fixture
    tmp = tmp_path_factory.mktemp("reliability")
    store = open_store(tmp / "store.sqlite")
    store.create_user("u", task="LaMP_3")
    yield _app(run_dir, store, tmp)
    store.close()


# --- 1. the body limit counts the bytes actually read ---

async def _chunks(body: bytes, size: int = 65_536, pause: float = 0.0):
    for i in range(0, len(body), size):
        if pause:
            await asyncio.sleep(pause)
        yield body[i:i + size]


def test_oversize_bodies_are_refused_however_they_are_sent_and_store_nothing(app):
    store = app.state.store
    big = json.dumps({"items": [{"text": "x" * 15_000, "score": "3"}] * 200}).encode()  # 3 MB of valid items
    before, stored = _state(store), store.count_interactions("u")
    path = "/v1/users/u/history"
    for kw in ({"content": big},  # Content-Length: refused before it is read
               {"content": _chunks(big)},  # chunked: no Content-Length at all
               {"content": _chunks(big, 131_072, pause=0.005)},  # streamed slowly
               {"content": _chunks(b" " * (app.state.server.limits.max_body_bytes + 1))}):  # one byte over
        err = _openai_error(_one(app, "POST", path, **kw), 413)
        assert err["code"] == "request_too_large" and "over the limit of 2000000" in err["message"]
    _openai_error(_one(app, "POST", "/v1/users", content=_chunks(big)), 413)  # every route
    assert _state(store) == before
    # a chunked body under the limit is read whole and served as usual
    ok = _one(app, "POST", path, content=_chunks(json.dumps({"items": [ITEM]}).encode(), 7))
    assert ok.status_code == 200, ok.text
    assert store.count_interactions("u") == stored + 1


# --- 2. personas follow the input rules everywhere ---

@pytest.mark.parametrize("body, param", [
    (b'{"user_id":"p1","persona":{"extensions":{"x":NaN}}}', "persona.extensions.x"),
    (b'{"user_id":"p2","persona":{"identity":{"name":"a\\ud800b"}}}', "persona.identity.name"),
    (b'{"user_id":"p3","persona":{"preference":{"rating_distribution":{"5":Infinity}}}}',
     "persona.preference.rating_distribution.5"),
    (json.dumps({"user_id": "p4", "persona": {"personality": {"description": "x" * 1_500_000}}}).encode(),
     "persona.personality.description"),
    (json.dumps({"user_id": "p5", "persona": {"extensions": {f"k{i}": "y" * 3_000 for i in range(14)}}}).encode(),
     "persona"),
])
def test_a_bad_persona_is_a_400_naming_the_field_and_creates_nothing(app, body, param):
    store = app.state.store
    before = _state(store)
    err = _openai_error(_one(app, "POST", "/v1/users", content=body), 400)
    assert err["param"] == param and err["code"] == "invalid_value" and "\n" not in err["message"]
    assert err["message"].startswith("persona: ")
    assert _state(store) == before
    uid = json.loads(body.decode().replace("NaN", "0").replace("Infinity", "0"))["user_id"]
    _openai_error(_one(app, "GET", f"/v1/users/{uid}"), 404)  # not created: no 500 forever after


def test_cli_and_python_api_refuse_the_same_personas(tmp_path, capsys):
    from pplug.persona.schema import PersonaError

    store = tmp_path / "s.sqlite"
    bad = tmp_path / "bob.json"
    bad.write_text('{"extensions": {"x": NaN}}')
    assert main(["user", "create", "bob", "--persona", str(bad), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pplug user: error: {bad}: field 'extensions.x': nan is not a JSON number (finite numbers only)"
    good = tmp_path / "ana.yaml"
    good.write_text("identity: {name: Ana}\n")
    assert main(["user", "create", "ana", "--persona", str(good), "--store", str(store)]) == 0
    with open_store(store) as s:
        assert s.users() == ["ana"]
        p = s.persona("ana")
        p.extensions["x"] = float("nan")  # edited in code, never through from_dict
        with pytest.raises(PersonaError, match="field 'extensions.x'"):
            s.update_persona("ana", p)
        p.extensions["x"] = "a\ud800b"
        with pytest.raises(PersonaError, match="not valid Unicode"):
            s.update_persona("ana", p)
        assert s.persona_version("ana") == 1 and "x" not in s.persona("ana").extensions
    capsys.readouterr()
    assert main(["user", "show", "ana", "--store", str(store)]) == 0


# --- 3. erasure races and server paths ---

def test_erasure_races_lose_with_a_404_on_both_backends(run_dir, store_url, tmp_path, monkeypatch):  # noqa: F811
    store = open_store(store_url)
    try:
        app = _app(run_dir, store, tmp_path)
        for uid in ("gone", "racer"):
            _one(app, "POST", "/v1/users", json={"user_id": uid})
        # four erasures of one user at once: one wins, the others find no user
        codes = sorted(r.status_code for r in _requests(app, *[("DELETE", "/v1/users/racer", {})] * 4))
        assert codes == [200, 404, 404, 404]
        # the window between a request's user check and its write: the user is erased meanwhile
        assert _one(app, "DELETE", "/v1/users/gone").status_code == 200
        monkeypatch.setattr(store, "has_user", lambda user_id: True)  # every check passed before the erasure
        for method, path, kw in (("DELETE", "/v1/users/gone", {}),
                                 ("POST", "/v1/users/gone/history", {"json": {"items": [ITEM]}}),
                                 ("GET", "/v1/users/gone", {})):
            err = _openai_error(_one(app, method, path, **kw), 404)
            assert err["code"] == "user_not_found" and err["message"] == "unknown user 'gone'"
        monkeypatch.undo()
        assert store.users() == [] and store.count_interactions() == 0
    finally:
        store.close()


def test_two_stores_erasing_one_user_at_once_one_wins(store_url):
    import threading

    from pplug.store.schema import UnknownUserError

    first, second = open_store(store_url), open_store(store_url)
    try:
        first.create_user("ana", task="LaMP_3")
        first.add_interactions("ana", [ITEM])
        barrier, results = threading.Barrier(2), []

        def erase(s):
            barrier.wait(timeout=30)
            try:
                results.append(s.delete_user("ana")["users"])
            except UnknownUserError:
                results.append("unknown")

        threads = [threading.Thread(target=erase, args=(s,)) for s in (first, second)]
        [t.start() for t in threads]
        [t.join(timeout=60) for t in threads]
        assert sorted(results, key=str) == [1, "unknown"]
        # the loser of a race whose check ran before the winner's commit: still told, not "0 rows erased"
        first.create_user("bob")
        second.has_user = lambda user_id: True
        first.delete_user("bob")
        with pytest.raises(UnknownUserError, match="unknown user 'bob'"):
            second.delete_user("bob")
    finally:
        first.close(), second.close()


def test_replies_never_show_where_the_store_lives(app, tmp_path):
    store = app.state.store
    replies = [_one(app, "POST", "/v1/users", json={"user_id": "u"}),  # exists
               _one(app, "POST", "/v1/users", json={"user_id": "p", "persona": {"identity": {"user_id": "q"}}}),
               _one(app, "GET", "/v1/users/nobody"),
               _one(app, "POST", "/v1/users/nobody/history", json={"items": [ITEM]})]
    assert [r.status_code for r in replies] == [409, 400, 404, 404]
    for r in replies:
        assert store.location not in r.text and str(Path(store.location).parent) not in r.text, r.text


# --- 4. add-history: one transaction, idempotency keys, kill -9 ---

def test_add_history_is_all_or_nothing_with_its_persona_refresh(store_url, monkeypatch):
    from pplug.adapt import fast

    with open_store(store_url) as store:
        store.create_user("ana", task="LaMP_3")
        enc = BagOfWordsEncoder()
        fast.add_history(store, "ana", [ITEM], enc)

        def broken(history, spec):  # the refresh fails after the items were inserted
            raise RuntimeError("refresh failed")

        monkeypatch.setattr(fast, "derive_from_history", broken)
        with pytest.raises(RuntimeError, match="refresh failed"):
            fast.add_history(store, "ana", [ITEM, ITEM], enc)
        assert store.count_interactions("ana") == 1 and store.persona_version("ana") == 2
        assert store.memory_vectors("ana", enc.identity)[0] == [store.history("ana")[0].id]
        monkeypatch.undo()
        fast.add_history(store, "ana", [ITEM, ITEM], enc)
        assert store.count_interactions("ana") == 3 and store.persona("ana").pattern.activity_count == 3


def test_a_user_and_its_api_key_are_created_in_one_transaction(store_url):
    with open_store(store_url) as store:
        store.create_user("ana", api_key_sha256="ab" * 32)
        assert store.user_for_api_key_hash("ab" * 32) == "ana"
        with pytest.raises(Exception, match="(?i)unique"):  # the key's row fails: the user is not created either
            store.create_user("bob", api_key_sha256="ab" * 32)
        assert store.users() == ["ana"]


def test_an_upload_retried_with_its_idempotency_key_is_stored_once(store_url):
    from pplug.adapt.fast import add_history
    from pplug.store.schema import IdempotencyKeyReusedError
    from pplug.store.validation import InvalidInputError

    with open_store(store_url) as store:
        store.create_user("ana", task="LaMP_3")
        enc = BagOfWordsEncoder()
        first = add_history(store, "ana", [ITEM, {"text": "meh", "score": 2}], enc, idempotency_key="k-1")
        again = add_history(store, "ana", [ITEM, {"text": "meh", "score": "2"}], enc, idempotency_key="k-1")
        assert again.replayed and not first.replayed
        assert (again.ids, again.persona_version, again.diff) == (first.ids, first.persona_version, first.diff)
        assert store.count_interactions("ana") == 2 and store.persona_version("ana") == 2
        with pytest.raises(IdempotencyKeyReusedError, match="'k-1' was used for another upload"):
            add_history(store, "ana", [ITEM], enc, idempotency_key="k-1")
        with pytest.raises(InvalidInputError, match="invalid idempotency key"):
            add_history(store, "ana", [ITEM], enc, idempotency_key="a b")
        store.create_user("bob", task="LaMP_3")  # keys are per user
        assert not add_history(store, "bob", [ITEM], enc, idempotency_key="k-1").replayed
        assert store.delete_user("ana")["idempotency_keys"] == 1  # erasure takes the keys too
        assert store.count_interactions() == 1


def test_server_and_cli_take_an_idempotency_key(app, tmp_path, tiny_encoder_dir, capsys):
    store = app.state.store
    store.create_user("idem", task="LaMP_3")
    body = {"items": [ITEM, {"text": "second", "score": "1"}]}
    path, key = "/v1/users/idem/history", {"Idempotency-Key": "upload-7"}
    a = _one(app, "POST", path, json=body, headers=key)
    b = _one(app, "POST", path, json=body, headers=key)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert b.json()["replayed"] is True and "replayed" not in a.json()
    assert b.json()["ids"] == a.json()["ids"] and b.json()["history_items"] == 2
    err = _openai_error(_one(app, "POST", path, json={"items": [ITEM]}, headers=key), 422)
    assert err["code"] == "idempotency_key_reused" and err["param"] == "Idempotency-Key"
    assert _openai_error(_one(app, "POST", path, json=body, headers={"Idempotency-Key": "a b"}), 400)["param"] \
        == "Idempotency-Key"
    assert store.count_interactions("idem") == 2
    # the CLI: the same file twice with one key
    db = tmp_path / "cli.sqlite"
    assert main(["user", "create", "ana", "--store", str(db)]) == 0
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(it) for it in body["items"]))
    argv = ["user", "add-history", "ana", str(items), "--encoder", str(tiny_encoder_dir), "--device", "cpu",
            "--embedding-cache", str(tmp_path / "emb.sqlite"), "--idempotency-key", "file-1", "--store", str(db)]
    assert main(argv) == 0 and main(argv) == 0
    out = capsys.readouterr().out
    assert "already added (idempotency key seen): nothing stored, 2 interactions" in out
    with open_store(db) as s:
        assert s.count_interactions("ana") == 2 and s.persona("ana").pattern.activity_count == 2


@pytest.mark.slow
def test_kill_9_during_uploads_loses_nothing_acknowledged_and_duplicates_nothing(
        run_dir, tiny_encoder_dir, tmp_path, store_url):  # noqa: F811
    """A reduced seeded run of benchmarks/bench_reliability.py, which kills 52 processes (13 per path and
    backend): here one kill point of server uploads on SQLite and one of CLI uploads on PostgreSQL, then the
    retries with the same idempotency keys."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_reliability import run_faults

    mode = "cli" if store_url.startswith("postgres") else "server"
    got = run_faults(mode, store_url, run_dir, str(tiny_encoder_dir), tmp_path, kills=1, seed=3, log=lambda m: None)
    assert got["faults"] == 1 and got["rows_acknowledged"] == got["rows_stored"] == 9, got
    assert got["lost"] == got["duplicates"] == got["half_written"] == got["errors"] == 0, got


# --- 6. one-line errors, one history-item shape ---

def test_a_folder_as_store_is_one_line(run_dir, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for argv in (["user", "list", "--store", str(folder)], ["user", "show", "ana", "--store", str(folder)],
                 ["user", "create", "ana", "--store", str(folder)],
                 ["serve", "--checkpoint", str(run_dir), "--store", str(folder), "--admin-key", "k"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.endswith(f"{folder}: a folder, not a SQLite store file (name a file, e.g. "
                                                f"{folder / 'pplug_store.sqlite'})"), err


def test_hub_retrieve_names_a_missing_adapter_folder(tiny_causal_llm_dir, tiny_encoder_dir, tmp_path, capsys):
    from test_lora_hub import PROFILES, _hub

    from pplug.encode.history import HistoryEncoder

    enc = HistoryEncoder(str(tiny_encoder_dir), cache_path=":memory:", device="cpu")
    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, enc).save_pretrained(tmp_path / "hub")
    history = tmp_path / "h.json"
    history.write_text(json.dumps(PROFILES["harsh"]))
    argv = ["hub", "retrieve", "--hub", str(hub), "--history", str(history),
            "--embedding-cache", str(tmp_path / "c.sqlite")]
    assert main(argv) == 0 and "retrieved: harsh" in capsys.readouterr().out
    shutil.rmtree(hub / "adapters" / "harsh")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pplug hub: error: {hub / 'adapters' / 'harsh'}: adapter folder missing (hub.json lists it)"


def test_generate_history_takes_the_items_add_history_takes(run_dir, tmp_path, capsys):  # noqa: F811
    items = [{"text": "loved it", "score": "5"}, {"text": "great", "score": 5, "id": 7}]  # ids optional
    for name, text in (("h.json", json.dumps(items)), ("h.jsonl", "\n".join(json.dumps(i) for i in items)),
                       ("p.json", json.dumps({"profile": items}))):
        (tmp_path / name).write_text(text)
        assert main(["generate", "--checkpoint", str(run_dir), "--input", "a fine album", "--history",
                     str(tmp_path / name), "--device", "cpu"]) == 0
        assert capsys.readouterr().out.strip() in {"1", "2", "3", "4", "5"}


def test_the_privacy_example_warns_before_it_runs():
    """docs/serving.md: the privacy-mode example names a checkpoint that takes user vectors, and the label-token
    caveat comes before the first command."""
    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    section = text[text.index("### Privacy mode"):text.index("### Erasure")]
    first_command = section.index("pplug embed-user --checkpoint")
    assert section.index("label_token") < first_command
    assert "--checkpoint checkpoints/pplug-synthetic " not in section  # trained with label tokens: refuses vectors


def test_a_persona_stored_invalid_by_an_older_version_is_a_409_naming_the_field_not_a_500(app):
    """A persona written before today's rules (here a NaN) fails validation when read: the reply names the
    field and how to recover, in the API's error shape."""
    import sqlite3

    store = app.state.store
    store.create_user("old", task="LaMP_3")
    with sqlite3.connect(store.location) as db:
        db.execute("UPDATE personas SET document = ? WHERE user_id = ?", ('{"extensions": {"x": NaN}}', "old"))
    err = _openai_error(_one(app, "GET", "/v1/users/old"), 409)
    assert err["param"] == "persona.extensions.x" and err["code"] == "stored_persona_invalid"
    assert "DELETE /v1/users/old" in err["message"] and store.location not in err["message"]
    assert _one(app, "DELETE", "/v1/users/old").status_code == 200  # the way out works
