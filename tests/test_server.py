"""`pplug serve`: the real server (uvicorn, loopback, free port) with tiny random models, called over HTTP.

Checks personalization (outputs follow the history, and equal the library's own path), dynamic batching
(rows of different users in one pass give what they give alone), isolation between keys, erasure (the
SQLite files are read directly afterwards), bad input (OpenAI error shape, nothing changed), privacy mode
(user vectors) and the pick-up of a newly promoted version without a restart.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

ADMIN = "test-admin-key"
MARKER = "zebracorn"  # a word only the erased user ever wrote (grepped for in the raw SQLite files)


def _review(text: str, score: int) -> dict:
    return {"text": text, "score": str(score)}


LOVER = [_review(f"wonderful, loved it, five stars {i}", 5) for i in range(6)]
HATER = [_review(f"terrible, boring, one star {i}", 1) for i in range(6)]


class Server:
    """uvicorn serving an app in a background thread on a pre-bound loopback socket (no port race)."""

    def __init__(self, app):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def call(self, method: str, path: str, key: str | None = ADMIN, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.client.request(method, path, headers=headers, **kw)

    def complete(self, prompt: str, key: str | None = ADMIN, **body) -> httpx.Response:
        return self.call("POST", "/v1/completions", key, json={"model": "pplug-run", "prompt": prompt, **body})

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_config) -> Path:
    """A run folder with final/ (a tiny random PPlug model) and its own embedding cache."""
    from pplug.modeling.model import PPlugModel

    root = tmp_path_factory.mktemp("serve") / "run"
    cfg = dataclasses.replace(tiny_config, max_history=8)
    model = PPlugModel.from_config(cfg, cache_path=":memory:")
    model.save_pretrained(root / "final")
    return root


@pytest.fixture(scope="module")
def served(run_dir):
    from pplug.serve.app import create_app

    app = create_app(run_dir, run_dir.parent / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=16,
                     window_ms=150, reload_interval=3600, model_name="pplug-run",
                     embedding_cache=run_dir.parent / "emb.sqlite", expose_soft_prompts=True)
    srv = Server(app)
    srv.app = app
    yield srv
    srv.close()


def _user(srv: Server, user_id: str, items: list[dict] | None = None) -> str:
    r = srv.call("POST", "/v1/users", json={"user_id": user_id})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    if items:
        r = srv.call("POST", f"/v1/users/{user_id}/history", key, json={"items": items})
        assert r.status_code == 200, r.text
    return key


def _probs(resp: httpx.Response) -> list[float]:
    assert resp.status_code == 200, resp.text
    p = resp.json()["pplug"]["label_probs"][0]
    return [p[k] for k in sorted(p)]


def _soft(resp: httpx.Response):
    """The soft prompt the server used for the reply's first input, (P, D)."""
    import torch

    assert resp.status_code == 200, resp.text
    return torch.tensor(resp.json()["pplug"]["soft_prompt"][0])


def _rel(a, b) -> float:
    return float((a - b).detach().norm() / a.detach().norm())


def _dist(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def _close(a: list[float], b: list[float], tol: float = 1e-6) -> bool:
    """Equal up to float noise. A tiny random LLM barely reacts to its soft prompt (two users' label
    probabilities differ by ~1e-5 to 1e-3), so "same" is checked much tighter than that, and the soft
    prompts themselves are compared too."""
    return _dist(a, b) <= tol


def test_health_models_and_openai_shape(served):
    h = served.call("GET", "/health", key=None).json()
    assert h["status"] == "ok" and h["version"] == "final" and h["task"] == "LaMP_3"
    m = served.call("GET", "/v1/models").json()
    assert [d["id"] for d in m["data"]] == ["pplug-run"]
    r = served.complete("the movie was great")  # admin, no user: cold start
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion"
    assert body["choices"][0]["text"] in {"1", "2", "3", "4", "5"}  # a rating task decodes to a label
    assert body["pplug"]["cold_start"] is True and body["pplug"]["history_items"] == 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0
    chat = served.call("POST", "/v1/chat/completions", json={
        "model": "pplug-run", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "great"}]})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"


def test_personalization_follows_history_and_matches_library(served, run_dir, tiny_config):
    from pplug.adapt.fast import user_batch
    from pplug.core.tasks import get_task
    from pplug.modeling.model import PPlugModel
    from pplug.store.sqlite import UserStore

    _user(served, "lover", LOVER)
    _user(served, "hater", HATER)
    _user(served, "lover-twin", LOVER)  # same history under another id (its persona text names the id)
    text = "the acting was okay I guess"
    lover, hater, twin = (served.complete(text, user=u) for u in ("lover", "hater", "lover-twin"))
    assert _rel(_soft(lover), _soft(hater)) > 0.01  # different histories -> different soft prompts
    assert _rel(_soft(lover), _soft(twin)) < 1e-6  # the soft prompt depends on the history, not on the id
    assert _dist(_probs(lover), _probs(hater)) > 1e-5  # ... and the outputs differ
    again = served.complete(text, user="lover")
    assert _close(_probs(again), _probs(lover)) and again.json()["pplug"]["context_cache_hit"] is True
    meta = again.json()["pplug"]
    assert meta["cold_start"] is False and meta["history_items"] == 6
    # the server computes exactly what the library does for that user (user_batch -> prefix -> choice_logprobs)
    model = PPlugModel.from_pretrained(run_dir / "final", cache_path=":memory:")
    spec = get_task("LaMP_3")
    with UserStore(run_dir.parent / "store.sqlite") as store:
        batch = user_batch(store, "lover", [spec.make_input(text)], spec, max_history=model.config.max_history,
                           encoder=model.history_encoder, budget=model.llm.prompt_budget())
    assert _rel(model.prefix(batch)[0], _soft(lover)) < 1e-5
    want = model.choice_logprobs(batch, list(spec.labels)).softmax(-1)[0].tolist()
    assert _close(_probs(lover), want), (_probs(lover), want)
    # new history takes effect at the next request (the per-user cache is keyed by the last interaction)
    served.call("POST", "/v1/users/lover/history", json={"items": HATER * 2})
    after = served.complete(text, user="lover")
    assert after.json()["pplug"]["context_cache_hit"] is False
    assert after.json()["pplug"]["history_items"] == 8  # the checkpoint's max_history most recent items
    assert _rel(_soft(after), _soft(lover)) > 0.01


def test_concurrent_users_share_a_batch_and_get_their_own_outputs(served):
    users = [f"b{i}" for i in range(6)]
    for i, u in enumerate(users):
        _user(served, u, [_review(f"item {i} {j} " + "great " * i, 1 + (i + j) % 5) for j in range(3)])
    texts = {u: f"review number {i} was fine" for i, u in enumerate(users)}
    alone = {u: _probs(served.complete(texts[u], user=u)) for u in users}
    with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
        resps = dict(zip(users, pool.map(lambda u: served.complete(texts[u], user=u), users)))
    sizes = [r.json()["pplug"]["batch_size"][0] for r in resps.values()]
    assert max(sizes) > 1, sizes  # concurrent requests of different users shared a forward pass
    for u in users:
        assert _close(_probs(resps[u]), alone[u], 1e-5), u  # batched == alone, row by row


def test_isolation_between_keys(served):
    ka = _user(served, "iso-a", LOVER[:2])
    _user(served, "iso-b", HATER[:2])
    assert served.call("GET", "/v1/users/iso-a", ka).status_code == 200
    for method, path, kw in [("GET", "/v1/users/iso-b", {}), ("DELETE", "/v1/users/iso-b", {}),
                             ("POST", "/v1/users/iso-b/history", {"json": {"items": LOVER[:1]}}),
                             ("GET", "/v1/users/nobody", {}), ("GET", "/v1/users", {}),
                             ("POST", "/v1/users", {"json": {"user_id": "x"}})]:
        r = served.call(method, path, ka, **kw)
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", (method, path, r.text)
    r = served.complete("nice", ka, user="iso-b")
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    own = served.complete("nice", ka).json()["pplug"]  # no `user`: the key's own user
    assert own["user"] == "iso-a" and own["history_items"] == 2
    assert served.call("GET", "/v1/users/iso-a", key=None).status_code == 401
    assert served.call("GET", "/v1/users/iso-a", key="pplug-u-forged").json()["error"]["code"] == "invalid_api_key"
    assert served.call("GET", "/v1/users/iso-b").json()["history"] == {"LaMP_3": 2}  # untouched


def test_the_key_is_a_bearer_token_checked_before_the_body(served):
    doc = served.call("GET", "/openapi.json", key=None).json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "the admin key, or a user's key (`pplug-u-...`)"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("security") == (None if path == "/health" else [{"HTTPBearer": []}]), (method, path)
    headers = {"Authorization": f"bearer   {ADMIN}"}  # the scheme in any case, the key stripped
    assert served.call("GET", "/v1/models", key=None, headers=headers).status_code == 200
    for auth in ("Basic abc", "Bearer", "Bearerkey"):
        r = served.call("GET", "/v1/models", key=None, headers={"Authorization": auth})
        assert r.status_code == 401 and r.json()["error"]["message"].startswith("missing API key"), auth
    r = served.call("POST", "/v1/users", key=None, json={"no": "user_id"})  # no key and a bad body: the key first
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_bad_input_is_a_4xx_in_openai_shape_and_changes_nothing(served, run_dir):
    from pplug.store.sqlite import UserStore

    key = _user(served, "careful", LOVER[:3])
    before = served.call("GET", "/v1/users/careful").json()
    cases = [
        (served.call("POST", "/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"}),
         400, "invalid_json"),
        (served.call("POST", "/v1/completions", json={"model": "pplug-run"}), 400, "missing_field"),
        (served.complete("x", model="gpt-4"), 404, "model_not_found"),
        (served.complete("x" * 9000), 400, "input_too_large"),
        (served.complete("x", max_tokens=10_000), 400, "invalid_value"),
        (served.complete("x", user_vector={"encoder": "other", "embeddings": []}), 400, "invalid_value"),
        (served.call("POST", "/v1/users/careful/history", key, json={"items": LOVER[:1] * 1001}), 400,
         "history_too_large"),
        (served.call("POST", "/v1/users/careful/history", key, json={"items": [LOVER[0], {"score": "3"}]}), 400,
         "invalid_value"),  # the second item lacks "text": the whole upload is refused
        (served.call("POST", "/v1/users/careful/history", key, json={"items": "no"}), 400, "invalid_value"),
        (served.call("POST", "/v1/users", json={"user_id": "careful"}), 409, "user_exists"),
        (served.call("POST", "/v1/users/careful/history", key, content=b"x" * 2_100_000,
                     headers={"Content-Type": "application/json"}), 413, "request_too_large"),
        (served.call("GET", "/v1/nothing"), 404, "not_found"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, (code, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] == code and err["message"], err
    assert "text" in cases[7][0].json()["error"]["message"]  # names the missing field
    assert served.call("GET", "/v1/users/careful").json() == before
    with UserStore(run_dir.parent / "store.sqlite") as store:
        assert store.count_interactions("careful") == 3


def test_privacy_mode_user_vector_equals_stored_history(served, run_dir, tmp_path):
    from pplug.cli.main import main
    from pplug.serve.privacy import embed_user

    _user(served, "stored", HATER)
    (tmp_path / "history.json").write_text(json.dumps(HATER))
    assert main(["embed-user", "--checkpoint", str(run_dir), "--history", str(tmp_path / "history.json"),
                 "--out", str(tmp_path / "vec.json")]) == 0
    doc = json.loads((tmp_path / "vec.json").read_text())
    assert set(doc) == {"format", "encoder", "task", "dim", "embeddings", "persona"}
    assert "terrible" not in json.dumps(doc)  # no history text in what is sent
    text = "a decent product"
    r = served.complete(text, user_vector=doc)
    meta = r.json()["pplug"]
    assert meta["private"] is True and meta["user"] is None and meta["history_items"] == 6
    # same prompt (persona text aside): compare with a stored user whose persona renders to nothing new
    stored = served.complete(text, user="stored")
    assert stored.json()["pplug"]["history_items"] == 6
    assert _rel(_soft(stored), _soft(r)) < 1e-4  # same history, sent as vectors: the same soft prompt
    other = served.complete(text, user_vector=embed_user(run_dir, LOVER))
    assert _rel(_soft(other), _soft(r)) > 0.01  # the vector personalises
    assert served.complete(text, user_vector={**doc, "embeddings": doc["embeddings"] * 2}).status_code == 400  # > max_history


def test_erasure_removes_everything_of_the_user(served, run_dir):
    from pplug.core.tasks import get_task
    from pplug.encode.cache import text_key

    spec = get_task("LaMP_3")
    mine = [_review(f"{MARKER} secret diary entry {i}", 2) for i in range(4)]
    shared = LOVER[0]  # also in lover's history: its cached embedding must stay
    _user(served, "keeper", [shared])
    key = _user(served, "erased", mine + [shared])
    assert served.complete("hello", key).json()["pplug"]["history_items"] == 5
    r = served.call("DELETE", "/v1/users/erased", key)
    assert r.status_code == 200, r.text
    removed = r.json()["removed"]
    assert removed["interactions"] == 5 and removed["memory_vectors"] == 5 and removed["users"] == 1
    assert removed["persona_versions"] >= 2 and removed["api_keys"] == 1
    assert removed["embedding_cache_rows"] == 4 and removed["embedding_cache_kept_shared"] == 1
    assert removed["soft_prompt_cache_entries"] == 1
    # nothing of the user is left in the store, read with a separate connection
    db = sqlite3.connect(run_dir.parent / "store.sqlite")
    for table in ("users", "personas", "interactions", "memory", "api_keys", "erasures"):
        assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id = 'erased'").fetchone()[0] == 0, table
    assert db.execute("SELECT COUNT(*) FROM interactions WHERE item LIKE ?", (f"%{MARKER}%",)).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM personas WHERE document LIKE ?", (f"%{MARKER}%",)).fetchone()[0] == 0
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):  # erasure did not open a general hole
        db.execute("DELETE FROM interactions WHERE user_id = 'keeper'")
    db.close()
    cache = sqlite3.connect(run_dir.parent / "emb.sqlite")
    keys = {bytes(k) for (k,) in cache.execute("SELECT key FROM embeddings")}
    cache.close()
    assert not keys & {text_key(spec.history_text(it)) for it in mine}
    assert text_key(spec.history_text(shared)) in keys
    for name in ("store.sqlite", "store.sqlite-wal", "emb.sqlite", "emb.sqlite-wal"):
        p = run_dir.parent / name
        if p.exists():
            assert MARKER.encode() not in p.read_bytes(), name  # secure_delete + WAL truncate: no stale copies
    # the key is dead, and the id is a cold start again
    assert served.complete("hello", key).status_code == 401
    assert served.complete("hello", user="erased").json()["pplug"]["cold_start"] is True
    assert served.call("GET", "/v1/users/erased").status_code == 404


def test_latest_promotion_is_picked_up_without_restart(run_dir, tmp_path):
    import shutil

    import torch

    from pplug.core.io import atomic_write_text
    from pplug.modeling.model import PPlugModel
    from pplug.serve.app import create_app

    root = tmp_path / "run"
    shutil.copytree(run_dir / "final", root / "final")
    app = create_app(root, tmp_path / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=4, window_ms=1,
                     reload_interval=0, model_name="pplug-run", embedding_cache=tmp_path / "emb.sqlite",
                     expose_soft_prompts=True)
    srv = Server(app)
    try:
        _user(srv, "u", LOVER)
        first = srv.complete("so so", user="u")
        assert first.json()["pplug"]["version"] == "final"
        model = PPlugModel.from_pretrained(root / "final", cache_path=":memory:")
        g = torch.Generator().manual_seed(0)  # its own generator: the same weights whatever ran before
        with torch.no_grad():
            for p in model.embedder.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
        model.save_pretrained(root / "v0001")
        atomic_write_text(root / "LATEST", "v0001\n")
        second = srv.complete("so so", user="u")
        assert second.json()["pplug"]["version"] == "v0001"
        assert srv.call("GET", "/health", key=None).json()["stats"]["reloads"] == 1
        # the new weights are the ones used: the soft prompt moves (a tiny random LLM's probabilities barely do)
        assert _rel(_soft(first), _soft(second)) > 0.05
        atomic_write_text(root / "LATEST", "v0009\n")  # a broken promotion: keep serving v0001
        assert srv.complete("so so", user="u").json()["pplug"]["version"] == "v0001"
    finally:
        srv.close()


def test_openai_python_client(served):
    openai = pytest.importorskip("openai")
    key = _user(served, "oai", LOVER[:2])
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=key)
    out = client.completions.create(model="pplug-run", prompt="loved it", max_tokens=4)
    assert out.choices[0].text in {"1", "2", "3", "4", "5"}
    chat = client.chat.completions.create(model="pplug-run", messages=[{"role": "user", "content": "loved it"}])
    assert chat.choices[0].message.content in {"1", "2", "3", "4", "5"}
    with pytest.raises(openai.PermissionDeniedError):
        client.completions.create(model="pplug-run", prompt="x", user="lover")


def test_batcher_fails_only_the_bad_row():
    """A batch that raises is retried row by row: the other callers still get their outputs."""
    import asyncio

    from pplug.serve.batching import Batcher

    class Engine:
        def __init__(self):
            self.calls = []

        def run_batch(self, rows):
            self.calls.append(len(rows))
            if "bad" in rows:
                raise ValueError("bad row")
            return [r.upper() for r in rows]

    engine = Engine()
    batcher = Batcher(engine, max_batch=8, window_ms=200)
    batcher.start()

    async def go():
        return await asyncio.gather(*(batcher.submit(r) for r in ["a", "bad", "c"]), return_exceptions=True)

    try:
        out = asyncio.run(go())
    finally:
        batcher.stop()
    assert out[0] == "A" and out[2] == "C" and isinstance(out[1], ValueError)
    assert engine.calls == [3, 1, 1, 1]  # one shared pass, then each row alone


def test_privacy_mode_carries_history_stats_for_user_stats_checkpoints(tiny_config, tmp_path):
    """A `user_stats` checkpoint needs the rating shares from the client too; older documents get a 400-worthy error."""
    import dataclasses

    from pplug.core.tasks import get_task
    from pplug.modeling.model import PPlugModel
    from pplug.serve.privacy import embed_user, parse_user_vector

    cfg = dataclasses.replace(tiny_config, user_stats=True)
    ck = PPlugModel.from_config(cfg, cache_path=tmp_path / "e.sqlite").save_pretrained(tmp_path / "ck")
    doc = embed_user(ck, LOVER)
    spec = get_task("LaMP_3")
    assert doc["stats"] == pytest.approx(spec.history_stats(LOVER), abs=1e-6) and doc["stats"][4] == 1.0
    emb, stats = parse_user_vector(doc, doc["encoder"], doc["dim"], "LaMP_3", 32, spec.stats_dim)
    assert emb.shape == (len(LOVER), doc["dim"]) and stats == doc["stats"]
    without = {k: v for k, v in doc.items() if k != "stats"}
    with pytest.raises(ValueError, match="user_vector.stats"):
        parse_user_vector(without, doc["encoder"], doc["dim"], "LaMP_3", 32, spec.stats_dim)


def test_history_mix_checkpoint_serves_the_mixed_distribution(tiny_config, tmp_path):
    """With `history_mix_items` the server's label probabilities are the library's mixed ones, and privacy mode
    carries the statistics the mix reads."""
    from pplug.adapt.fast import user_batch
    from pplug.core.tasks import get_task
    from pplug.modeling.model import PPlugModel
    from pplug.serve.app import create_app
    from pplug.serve.privacy import embed_user
    from pplug.store.sqlite import UserStore

    root = tmp_path / "run"
    cfg = dataclasses.replace(tiny_config, max_history=8, history_mix_items=2.0)
    PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(root / "final")
    assert embed_user(root / "final", LOVER)["stats"][4] == 1.0
    app = create_app(root, tmp_path / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=4, window_ms=10,
                     reload_interval=3600, model_name="pplug-run", embedding_cache=tmp_path / "emb.sqlite")
    srv = Server(app)
    try:
        _user(srv, "lover", LOVER)
        text = "the acting was okay I guess"
        got = _probs(srv.complete(text, user="lover"))
    finally:
        srv.close()
    assert got[4] > 6 / 8  # six fives against k = 2 model items: at least 6/8 of the mass on "5"
    model = PPlugModel.from_pretrained(root / "final", cache_path=":memory:")
    spec = get_task("LaMP_3")
    with UserStore(tmp_path / "store.sqlite") as store:
        batch = user_batch(store, "lover", [spec.make_input(text)], spec, max_history=8,
                           encoder=model.history_encoder, budget=model.llm.prompt_budget())
    assert _close(got, model.choice_logprobs(batch, list(spec.labels)).softmax(-1)[0].tolist(), tol=1e-5)


def test_history_prior_checkpoint_serves_what_the_library_computes(tiny_config, tmp_path):
    """`history_mix_prior: encoder`: the server computes the prior beside the soft prompts, from the stored
    embeddings and labels, and serves the library's distribution; privacy mode (no per-item labels) refuses it."""
    from pplug.adapt.fast import user_batch
    from pplug.core.tasks import get_task
    from pplug.modeling.model import PPlugModel
    from pplug.serve.app import create_app
    from pplug.serve.privacy import embed_user
    from pplug.store.sqlite import UserStore

    root = tmp_path / "run"
    cfg = dataclasses.replace(tiny_config, max_history=8, history_mix_items=2.0, history_mix_prior="encoder")
    PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(root / "final")
    with pytest.raises(ValueError, match="history_mix_prior"):
        embed_user(root / "final", LOVER)
    mixed = [dict(it, score="1") if i % 2 else it for i, it in enumerate(LOVER)]  # two labels, so the prior matters
    app = create_app(root, tmp_path / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=4, window_ms=10,
                     reload_interval=3600, model_name="pplug-run", embedding_cache=tmp_path / "emb.sqlite")
    srv = Server(app)
    try:
        _user(srv, "mixed", mixed)
        text = mixed[1]["text"]  # the input is a past item rated 1: the prior leans to "1"
        got = _probs(srv.complete(text, user="mixed"))
    finally:
        srv.close()
    model = PPlugModel.from_pretrained(root / "final", cache_path=":memory:")
    spec = get_task("LaMP_3")
    with UserStore(tmp_path / "store.sqlite") as store:
        batch = user_batch(store, "mixed", [spec.make_input(text)], spec, max_history=8,
                           encoder=model.history_encoder, budget=model.llm.prompt_budget())
    assert model.history_prior(batch)[0, 0] > 0.5  # the item itself weighs most
    assert _close(got, model.choice_logprobs(batch, list(spec.labels)).softmax(-1)[0].tolist(), tol=1e-5)
    flat = PPlugModel.from_pretrained(root / "final", cache_path=":memory:", history_mix_prior="shares")
    assert not _close(got, flat.choice_logprobs(batch, list(spec.labels)).softmax(-1)[0].tolist(), tol=1e-3)


def test_label_token_checkpoint_serves_what_the_library_computes(tiny_config, tmp_path):
    """A `label_token` checkpoint reads each stored item's label in the server as in the library; privacy mode,
    whose document carries no per-item labels, is refused with a clear 400 (and `embed_user` says why)."""
    from pplug.adapt.fast import user_batch
    from pplug.core.tasks import get_task
    from pplug.modeling.model import PPlugModel
    from pplug.serve.app import create_app
    from pplug.serve.privacy import embed_user
    from pplug.store.sqlite import UserStore

    root = tmp_path / "run"
    cfg = dataclasses.replace(tiny_config, max_history=8, label_token=True, user_stats=True, stats_init="labels")
    PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(root / "final")
    with pytest.raises(ValueError, match="label_token"):
        embed_user(root / "final", LOVER)
    app = create_app(root, tmp_path / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=4, window_ms=10,
                     reload_interval=3600, model_name="pplug-run", embedding_cache=tmp_path / "emb.sqlite",
                     expose_soft_prompts=True)
    srv = Server(app)
    text = "the acting was okay I guess"
    try:
        _user(srv, "lover", LOVER + HATER[:2])
        resp = srv.complete(text, user="lover")
        got, soft = _probs(resp), _soft(resp)
        private = srv.complete(text, user_vector={"embeddings": [], "encoder": "x", "task": "LaMP_3", "dim": 1})
    finally:
        srv.close()
    assert private.status_code == 400 and "label_token" in private.text
    model = PPlugModel.from_pretrained(root / "final", cache_path=":memory:")
    spec = get_task("LaMP_3")
    with UserStore(tmp_path / "store.sqlite") as store:
        batch = user_batch(store, "lover", [spec.make_input(text)], spec, max_history=8,
                           encoder=model.history_encoder, budget=model.llm.prompt_budget())
    assert batch.history_labels == [[4] * 6 + [0] * 2]
    torch = pytest.importorskip("torch")
    torch.testing.assert_close(soft, model.prefix(batch)[0].float(), atol=1e-5, rtol=1e-5)
    assert _close(got, model.choice_logprobs(batch, list(spec.labels)).softmax(-1)[0].tolist(), tol=1e-5)


def test_rank_one_input_for_many_users_in_one_batch(tiny_config, tmp_path):
    """`POST /v1/rank` (admin): each user's label distribution for one input, equal to asking for each user
    alone; with the soft prompt after the prompt the users' rows share the prompt's prefill. Wrong requests
    are 4xx in OpenAI's shape."""
    from pplug.modeling.model import PPlugModel
    from pplug.serve.app import create_app

    root = tmp_path / "run"
    cfg = dataclasses.replace(tiny_config, max_history=8, soft_prompt_position="after_prompt")
    PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(root / "final")
    app = create_app(root, tmp_path / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=8, window_ms=50,
                     reload_interval=3600, model_name="pplug-run", embedding_cache=tmp_path / "emb.sqlite")
    srv = Server(app)
    try:
        key = _user(srv, "lover", LOVER)
        _user(srv, "hater", HATER)
        text = "the acting was okay I guess"
        users = ["hater", "lover", "nobody-yet", "lover"]
        r = srv.call("POST", "/v1/rank", json={"model": "pplug-run", "input": text, "users": users})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["user"] for x in body["results"]] == users and body["pplug"]["soft_prompt_position"] == "after_prompt"
        assert [x["cold_start"] for x in body["results"]] == [False, False, True, False]
        ranked = {x["user"]: [x["label_probs"][k] for k in sorted(x["label_probs"])] for x in body["results"]}
        for user in ("hater", "lover"):
            assert _close(ranked[user], _probs(srv.complete(text, user=user)), tol=1e-5)
        assert _dist(ranked["hater"], ranked["lover"]) > 0  # each user's own history
        # wrong requests: a user key, another model, no users, too many, a bad id
        assert srv.call("POST", "/v1/rank", key, json={"model": "pplug-run", "input": text,
                                                        "users": ["lover"]}).status_code == 403
        for bad, status, param in (({"model": "other", "input": text, "users": ["lover"]}, 404, "model"),
                                   ({"model": "pplug-run", "input": text, "users": []}, 400, "users"),
                                   ({"model": "pplug-run", "input": text, "users": ["x"] * 5000}, 400, "users"),
                                   ({"model": "pplug-run", "input": text, "users": ["bad id!"]}, 400, "users"),
                                   ({"model": "pplug-run", "input": " ", "users": ["lover"]}, 400, "input")):
            r = srv.call("POST", "/v1/rank", json=bad)
            assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    finally:
        srv.close()
