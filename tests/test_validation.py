"""`pplug.store.validation`: the rules for user ids and history items, and that the store, `add_history` and
`pplug user add-history` refuse bad input whole (one message naming the item and field, no row written)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from test_fuzz_api import ITEMS, expected_score, first_bad, snapshot
from test_store import BagOfWordsEncoder

from pplug.adapt.fast import add_history
from pplug.core.tasks import get_task
from pplug.store.schema import StoreError
from pplug.store.sqlite import UserStore
from pplug.store.validation import (
    MAX_HISTORY_FILE_BYTES,
    MAX_ITEM_CHARS,
    MAX_TEXT_CHARS,
    InvalidInputError,
    check_item,
    check_items,
    check_user_id,
    item_json_schema,
)

LAMP3 = get_task("LaMP_3")


@pytest.mark.parametrize("user_id", ["alice", "a.b@example.com", "user_42", "x-y", "A" * 128, "..a", "7"])
def test_good_user_ids(user_id):
    assert check_user_id(user_id) == user_id


@pytest.mark.parametrize("user_id", ["", ".", "..", "../../etc/passwd", "a/b", "a\\b", "a b", " alice", "a\nb",
                                     "a\x00", "é", "A" * 129, "x" * 10_000, None, 5])
def test_bad_user_ids(user_id):
    with pytest.raises(InvalidInputError, match="invalid user id") as e:
        check_user_id(user_id)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200 and e.value.param == "user_id"


@pytest.mark.parametrize("score, stored", [("5", "5"), (" 3 ", "3"), ("4.0", "4"), (2, "2"), (1.0, "1")])
def test_rating_spellings_are_stored_as_one(score, stored):
    assert check_item({"text": "t", "score": score}, LAMP3)["score"] == stored


@pytest.mark.parametrize("score", ["banana", "", "0", "6", "4.5", "4.", "05", "1e0", 0, 6, 4.5, True, None, [5],
                                   float("nan"), float("inf")])
def test_bad_ratings_name_item_and_field(score):
    with pytest.raises(InvalidInputError, match=r"^history item 2: field 'score': ") as e:
        check_items([{"text": "a", "score": "1"}, {"text": "b", "score": "2"}, {"text": "c", "score": score}], LAMP3)
    assert e.value.param == "items.2.score" and e.value.code == "invalid_value"


@pytest.mark.parametrize("item, param", [
    ({"text": "", "score": "5"}, "items.0.text"),
    ({"text": " \n\t", "score": "5"}, "items.0.text"),
    ({"score": "5"}, "items.0.text"),
    ({"text": 3, "score": "5"}, "items.0.text"),
    ({"text": "a\x00b", "score": "5"}, "items.0.text"),
    ({"text": "\ud800", "score": "5"}, "items.0.text"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1), "score": "5"}, "items.0.text"),
    ({"text": "x", "score": "5", "note": "y" * MAX_ITEM_CHARS}, "items.0"),
    ({"text": "x", "score": "5", "deep": [[[[[[[[[[1]]]]]]]]]]}, "items.0.deep.0.0.0.0.0.0.0.0"),
    ({"text": "x", "score": "5", "when": float("nan")}, "items.0.when"),
    ("not an object", "items.0"),
])
def test_bad_items(item, param):
    with pytest.raises(InvalidInputError, match=r"^history item 0: ") as e:
        check_items([item], LAMP3)
    assert e.value.param == param and "\n" not in str(e.value)


def test_labels_and_texts_of_other_tasks():
    assert check_item({"description": "a space film", "tag": " sci-fi "}, get_task("LaMP_2"))["tag"] == "sci-fi"
    for task, item, field in [("LaMP_2", {"description": "d", "tag": "Sci-Fi"}, "tag"),
                              ("LaMP_2", {"description": "", "tag": "comedy"}, "description"),
                              ("LaMP_2N", {"text": "t", "title": "x", "category": "education & schools"}, "category"),
                              ("LaMP_1", {"title": "t", "abstract": " "}, "abstract"),
                              ("LaMP_4", {"text": "article", "title": ""}, "title")]:
        with pytest.raises(InvalidInputError, match=f"field '{field}'"):
            check_items([item], task)
    assert check_items([{"title": "t", "abstract": "a"}], "LaMP_1") == [{"title": "t", "abstract": "a"}]
    assert check_items([{"anything": 1}], None) == [{"anything": 1}]  # no task: only the JSON rules


def test_item_json_schema_says_the_same():
    doc = item_json_schema(LAMP3)
    assert doc["required"] == ["text", "score"] and doc["properties"]["text"]["minLength"] == 1
    assert {"enum": ["1", "2", "3", "4", "5"]} in doc["properties"]["score"]["anyOf"]
    assert item_json_schema(get_task("LaMP_2"))["properties"]["tag"]["enum"][0] == "sci-fi"


# --- the store and the Python API: one bad item, nothing written ---


def test_store_refuses_bad_ids_and_items_whole(tmp_path):
    with UserStore(tmp_path / "s.sqlite") as store:
        for bad in ("../../etc/passwd", "a/b", ".", "x" * 200):
            with pytest.raises(StoreError, match="invalid user id"):
                store.create_user(bad, task="LaMP_3")
        store.create_user("ana", task="LaMP_3")
        before = snapshot(store.path)
        with pytest.raises(InvalidInputError, match="history item 1: field 'score'"):
            store.add_interactions("ana", [{"text": "ok", "score": "4"}, {"text": "x", "score": "banana"}])
        assert snapshot(store.path) == before and store.users() == ["ana"]


FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def test_add_history_takes_all_or_nothing(tmp_path):
    with UserStore(tmp_path / "s.sqlite") as store:
        store.create_user("ana", task="LaMP_3")
        encoder = BagOfWordsEncoder()

        @FUZZ
        @given(items=ITEMS)
        def run(items):
            before = snapshot(store.path)
            bad = first_bad(items)
            if not bad:
                res = add_history(store, "ana", items, encoder)
                assert [r.item["score"] for r in store.history("ana")[-len(items):]] == [
                    expected_score(it["score"]) for it in items]
                assert len(res.ids) == len(items)
                return
            with pytest.raises(ValueError) as e:  # one ValueError subclass, for every rule
                add_history(store, "ana", items, encoder)
            assert isinstance(e.value, InvalidInputError) and e.value.param in bad, (items, e.value)
            index, field = e.value.param.split(".")[1:]
            assert str(e.value).startswith(f"history item {index}: field '{field}': ")
            assert snapshot(store.path) == before  # not one row, not one persona version

        run()


# --- the command line: one line on stderr, exit 2, nothing written ---


@pytest.fixture
def cli_store(tmp_path, capsys):
    from pplug.cli.main import main

    db = tmp_path / "cli.sqlite"
    assert main(["user", "create", "ana", "--store", str(db), "--task", "LaMP_3"]) == 0
    capsys.readouterr()
    return db


def _huge_file(path) -> None:
    with open(path, "wb") as f:  # sparse: the size is what counts, nothing is written to disk
        f.truncate(MAX_HISTORY_FILE_BYTES + 1)


@pytest.mark.parametrize("name, content, says", [
    ("wrong label", json.dumps([{"text": "ok", "score": "4"}, {"text": "x", "score": "banana"}]),
     "history item 1: field 'score': 'banana' is not a score of LaMP_3"),
    ("empty text", json.dumps([{"text": "", "score": "5"}]), "history item 0: field 'text': empty"),
    ("missing field", '{"text": "a", "score": "1"}\n{"score": "2"}\n', "history item 1: field 'text': missing"),
    ("not utf-8", b'[{"text": "caf\xe9", "score": "4"}]', "not UTF-8 text"),
    ("not json", "this is not json", "line 1: not JSON"),
    ("not a list", "42", "expected a JSON list of profile items, got int"),
    ("not objects", '["a", "b"]', "item 0: expected a JSON object, got str"),
    ("empty", "", "no history items"),
    ("huge item", json.dumps([{"text": "x" * (MAX_TEXT_CHARS + 5), "score": "4"}]), "over the limit of"),
    ("huge file", None, f"over the limit of {MAX_HISTORY_FILE_BYTES}"),
])
def test_cli_add_history_refuses_malformed_files(cli_store, tmp_path, capsys, name, content, says):
    from pplug.cli.main import main

    path = tmp_path / "history.json"
    if content is None:
        _huge_file(path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    before = snapshot(cli_store)
    # an encoder that does not exist: a bad file is refused before any model is loaded
    assert main(["user", "add-history", "ana", str(path), "--store", str(cli_store), "--encoder", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pplug user: error: ") and says in err, err
    assert snapshot(cli_store) == before


@pytest.mark.parametrize("user_id", ["../../etc/passwd", "a/b", "..", "x" * 300, "bad\x1bid"])
def test_cli_refuses_bad_user_ids(tmp_path, capsys, user_id):
    from pplug.cli.main import main

    db = tmp_path / "cli.sqlite"
    assert main(["user", "create", user_id, "--store", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid user id" in err and "\x1b" not in err
    assert not db.exists()  # refused before the store was opened
    assert main(["user", "show", user_id, "--store", str(db)]) == 2
    assert "invalid user id" in capsys.readouterr().err

