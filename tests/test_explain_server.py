"""`POST /v1/explain`, `GET /v1/users/{id}/history`, `GET /v1/whoami` and the page `GET /ui` on a real server
(uvicorn on loopback) with a tiny random model: the explanation is the library's, its history row is what
`/v1/completions` answers, and keys reach what the API lets them reach (no key, another user's key, an erased
user: the API's refusals in OpenAI's error shape)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_server import ADMIN, HATER, LOVER, Server

MODEL = "pplug-run"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_config):
    from pplug.modeling.model import PPlugModel
    from pplug.serve.app import create_app

    root = tmp_path_factory.mktemp("explain_serve")
    cfg = dataclasses.replace(tiny_config, max_history=8, aggregation="mixed", temperature=0.2, user_stats=True)
    torch.manual_seed(0)
    PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(root / "run" / "final")
    app = create_app(root / "run", root / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=4, window_ms=5,
                     reload_interval=3600, model_name=MODEL, embedding_cache=root / "emb.sqlite")
    srv = Server(app)
    srv.app = app
    yield srv
    srv.close()


def _user(srv: Server, user_id: str, items: list[dict]) -> str:
    r = srv.call("POST", "/v1/users", json={"user_id": user_id})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    if items:
        assert srv.call("POST", f"/v1/users/{user_id}/history", key, json={"items": items}).status_code == 200
    return key


def _error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "\n" not in err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def test_explanation_is_the_librarys_and_its_history_row_is_the_served_output(served):
    from pplug.decode.explain import explain
    from pplug.lamp.data import Example

    key = _user(served, "xa", LOVER)
    r = served.call("POST", "/v1/explain", key, json={"model": MODEL, "input": "the movie was great"})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["object"] == "pplug.explanation" and e["user"] == "xa" and e["history_items"] == 6
    assert sum(it["weight"] for it in e["items"]) == pytest.approx(1.0, abs=1e-5)
    assert e["privacy"] == {"mode": "stored", "history_on_server": True, "user_vector_accepted": True}
    assert e["statistics"]["label_shares"]["5"] == pytest.approx(1.0)
    served_out = served.complete("the movie was great", key).json()
    assert e["counterfactual"]["history"]["output"] == served_out["choices"][0]["text"]
    got = served_out["pplug"]["label_probs"][0]
    assert e["counterfactual"]["history"]["label_probs"] == pytest.approx(got, abs=1e-5)
    cold = served.complete("the movie was great", ADMIN, user="nobody-here").json()["pplug"]["label_probs"][0]
    assert e["counterfactual"]["cold_start"]["label_probs"] == pytest.approx(cold, abs=1e-5)
    # the library on the same model, history and persona gives the same weights
    engine = served.app.state.engine
    ctx, _ = engine.user_context("xa")
    spec = engine.spec
    (lib,) = explain(engine.snapshot.model, [Example("x", spec.make_input("the movie was great"), ctx.items)],
                     personas=[ctx.persona])
    assert [it["weight"] for it in e["items"]] == pytest.approx([it["weight"] for it in lib["items"]], abs=1e-6)
    # the admin explains any user; the same user, the same answer
    a = served.call("POST", "/v1/explain", json={"model": MODEL, "input": "the movie was great", "user": "xa"})
    assert a.status_code == 200 and a.json()["items"] == e["items"]


def test_history_whoami_and_access(served):
    key_b = _user(served, "xb", HATER)
    key_c = _user(served, "xc", [])
    me = served.call("GET", "/v1/whoami", key_b).json()
    assert me["admin"] is False and me["user_id"] == "xb" and me["model"] == MODEL
    assert served.call("GET", "/v1/whoami").json()["admin"] is True
    h = served.call("GET", "/v1/users/xb/history", key_b).json()
    assert h["total"] == 6 and [d["item"]["text"] for d in h["data"]] == [it["text"] for it in HATER]
    assert len(served.call("GET", "/v1/users/xb/history?limit=2", key_b).json()["data"]) == 2
    _error(served.call("GET", "/v1/users/xb/history?limit=0", key_b), 400, "invalid_value")
    _error(served.call("GET", "/v1/users/xb/history", key_c), 403, "permission_denied")
    _error(served.call("GET", "/v1/users/xb/history", None), 401, "invalid_api_key")
    _error(served.call("GET", "/v1/users/nobody/history"), 404, "user_not_found")
    body = {"model": MODEL, "input": "boring"}
    _error(served.call("POST", "/v1/explain", key_c, json={**body, "user": "xb"}), 403, "permission_denied")
    _error(served.call("POST", "/v1/explain", None, json=body), 401, "invalid_api_key")
    _error(served.call("POST", "/v1/explain", json=body), 400, "missing_field")  # the admin names a user
    _error(served.call("POST", "/v1/explain", json={**body, "user": "nobody"}), 404, "user_not_found")
    _error(served.call("POST", "/v1/explain", key_b, json={**body, "input": "  "}), 400, "invalid_value")
    _error(served.call("POST", "/v1/explain", key_b, json={**body, "model": "other"}), 404, "model_not_found")
    _error(served.call("POST", "/v1/explain", key_b, json={**body, "top": -1}), 400)
    # a user without history: no items; their stored persona text is all the history row has beyond a cold start
    c = served.call("POST", "/v1/explain", key_c, json=body).json()
    persona_only = dict(c["counterfactual"]["persona_only"])
    persona_only.pop("persona")
    assert c["items"] == [] and c["counterfactual"]["history"] == persona_only
    # erased: the user's key is gone (401), the admin finds no user (404)
    assert served.call("DELETE", "/v1/users/xb", key_b).status_code == 200
    _error(served.call("POST", "/v1/explain", key_b, json=body), 401, "invalid_api_key")
    _error(served.call("GET", "/v1/users/xb/history"), 404, "user_not_found")
    _error(served.call("POST", "/v1/explain", json={**body, "user": "xb"}), 404, "user_not_found")


def test_page_is_static_and_holds_no_data(served):
    r = served.call("GET", "/ui", None)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    assert "/v1/explain" in r.text and "xa" not in r.text and ADMIN not in r.text
    assert served.call("GET", "/ui", ADMIN).text == r.text  # the same text whoever asks


def test_batcher_call_runs_alone_on_the_engine_thread():
    """`POST /v1/explain` runs the model through `Batcher.call`: on the one thread that runs the LLM, between
    batches, its exception handed to the caller while the engine goes on serving rows."""
    import asyncio
    import threading

    from pplug.serve.batching import Batcher

    class Engine:
        def run_batch(self, rows):
            return [{"text": r, "thread": threading.current_thread().name} for r in rows]

    batcher = Batcher(Engine(), max_batch=4, window_ms=1)
    batcher.start()

    def fail():
        raise ValueError("refused")

    async def go():
        name = await batcher.call(lambda: threading.current_thread().name)
        with pytest.raises(ValueError, match="refused"):
            await batcher.call(fail)
        row = await batcher.submit("r")
        return name, row

    try:
        name, row = asyncio.run(go())
    finally:
        batcher.stop()
    assert name == "pplug-batcher" == row["thread"] and row["text"] == "r"
