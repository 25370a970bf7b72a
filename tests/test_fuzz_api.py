"""Fuzzing `pplug serve` from its own OpenAPI schema (schemathesis strategies driven by hypothesis), with tiny
random models behind it, and `pplug.store.validation` with generated history items.

The properties: no request gets a 5xx, every error reply is in OpenAI's shape, and a refused request leaves
the SQLite store as it was (integrity_check "ok" and every row of every table the same). Runs are
derandomized with a fixed number of examples, so CI sees the same requests every time, in a few seconds.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import ADMIN, Server, run_dir  # noqa: F401  (run_dir: the tiny checkpoint fixture)

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))
KNOWN = ("fuzz-a", "fuzz-b")
"""Users that exist throughout, so path ids and `user` fields also reach real rows, not only 404s."""
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def fuzzed(run_dir, tmp_path_factory):  # noqa: F811 - run_dir is the imported fixture
    from pplug.serve.app import create_app

    store = tmp_path_factory.mktemp("fuzz") / "store.sqlite"
    app = create_app(run_dir, store, admin_key=ADMIN, device="cpu", max_batch=4, window_ms=1, reload_interval=3600,
                     model_name="pplug-run", embedding_cache=store.parent / "emb.sqlite")
    srv = Server(app)
    srv.app, srv.store_path = app, store
    for user in KNOWN:
        assert srv.call("POST", "/v1/users", json={"user_id": user}).status_code == 201
        r = srv.call("POST", f"/v1/users/{user}/history", json={"items": [{"text": f"{user} liked it", "score": 4}]})
        assert r.status_code == 200, r.text
    yield srv
    srv.close()


def snapshot(path) -> dict:
    """Every row of every table of the store (read on its own connection), after checking the file is sound."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    finally:
        db.close()


def check_reply(status: int, body, before: dict, after: dict, request: str) -> None:
    assert status < 500, (status, body, request)
    if status >= 400:
        assert isinstance(body, dict) and set(body) == {"error"}, (body, request)
        err = body["error"]
        assert set(err) == ERROR_KEYS and err["message"] and isinstance(err["type"], str), (body, request)
        assert all(err[k] is None or isinstance(err[k], str) for k in ("param", "code")), (body, request)
        assert after == before, f"refused with {status} but the store changed: {request}"


def test_fuzzed_requests_never_fail_and_refusals_change_nothing(fuzzed):
    import schemathesis

    schema = schemathesis.openapi.from_dict(fuzzed.call("GET", "/openapi.json").json())
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    cases = st.one_of(*[schema.as_strategy(m) for m in modes],
                      *[schema["/v1/users/{user_id}"]["GET"].as_strategy(m, path_parameters={"user_id": u})
                        for m in modes for u in KNOWN],
                      *[schema["/v1/users/{user_id}/history"]["POST"].as_strategy(m, path_parameters={"user_id": u})
                        for m in modes for u in KNOWN])

    @FUZZ
    @given(case=cases, key=st.sampled_from([ADMIN, ADMIN, ADMIN, "pplug-u-forged", ""]))
    def run(case, key):
        before = snapshot(fuzzed.store_path)
        r = case.call(base_url=fuzzed.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        try:
            body = r.json()
        except ValueError:
            body = r.text
        check_reply(r.status_code, body, before, snapshot(fuzzed.store_path), f"{case.method} {case.formatted_path} "
                    f"{case.body!r:.300}")

    run()


# --- history items: generated LaMP_3 items, good and bad, against the documented rules ---

GOOD_SCORES = st.one_of(st.sampled_from(["1", "2", "3", "4", "5", " 3 ", "5.0", "2.00"]), st.integers(1, 5),
                        st.integers(1, 5).map(float))
SCORES = st.one_of(GOOD_SCORES, st.integers(-1, 7), st.sampled_from(["banana", "", "0", "6", "4.5", "five", "1e0",
                                                                     "05", "٣"]),
                   st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.lists(st.integers()))
TEXTS = st.one_of(st.text(max_size=24), st.sampled_from(["", "   ", "\n\t", "x\x00y"]), st.integers(), st.none())
GOOD = st.fixed_dictionaries({"text": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
                              .filter(str.strip), "score": GOOD_SCORES})
ANY = st.one_of(GOOD, st.fixed_dictionaries({"text": TEXTS, "score": SCORES}), st.fixed_dictionaries({"text": TEXTS}),
                st.fixed_dictionaries({"score": SCORES}))
ITEMS = st.one_of(st.lists(GOOD, min_size=1, max_size=4), st.lists(ANY, min_size=1, max_size=4))
"""Uploads of 1 to 4 items: all good ones, or a mix where any item may break any rule."""


def expected_score(score) -> str | None:
    """The rule of docs/serving.md, written out on its own: a score 1..5 as a string or a number."""
    if isinstance(score, bool):
        return None
    if isinstance(score, (int, float)) and float(score) in (1.0, 2.0, 3.0, 4.0, 5.0):
        return str(int(score))
    if isinstance(score, str):
        whole, dot, zeros = score.strip().partition(".")
        if whole in ("1", "2", "3", "4", "5") and (not dot or (zeros and set(zeros) == {"0"})):
            return whole
    return None


def first_bad(items: list[dict]) -> set[str]:
    """`items.<i>.<field>` of the bad fields of the first item the store must refuse (empty: all good)."""
    for i, it in enumerate(items):
        text, bad = it.get("text"), set()
        if not isinstance(text, str) or not text.strip() or "\x00" in text:
            bad.add(f"items.{i}.text")
        if expected_score(it.get("score")) is None:
            bad.add(f"items.{i}.score")
        if bad:
            return bad
    return set()


def test_fuzzed_history_items_are_all_taken_or_all_refused(fuzzed):
    @FUZZ
    @given(items=ITEMS)
    def run(items):
        before = snapshot(fuzzed.store_path)
        r = fuzzed.call("POST", f"/v1/users/{KNOWN[0]}/history", json={"items": items})
        body = r.json()
        after = snapshot(fuzzed.store_path)
        check_reply(r.status_code, body, before, after, repr(items))
        bad = first_bad(items)
        if not bad:
            assert r.status_code == 200 and body["added"] == len(items), (items, body)
            stored = [json.loads(row[-1])["score"] for row in after["interactions"][-len(items):]]
            assert stored == [expected_score(it["score"]) for it in items]  # one spelling per score
        else:
            err = body["error"]
            assert r.status_code == 400 and err["param"] in bad and err["code"] == "invalid_value", (items, body)
            index, field = err["param"].split(".")[1:]
            assert f"history item {index}: field '{field}'" in err["message"], err  # names the item and field

    run()
