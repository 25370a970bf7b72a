"""Loading official LaMP files: every malformed input is one clear line, nothing is written."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from pplug.lamp.data import Example, LaMPDataError, load_outputs, load_split, write_outputs, write_split

Q3 = "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 " \
     "without further explanation. review: "  # fmt: skip


def _questions(n=2, profile_len=2):
    return [
        {
            "id": f"q{i}",
            "user_id": f"u{i}",
            "input": Q3 + f"review number {i}",
            "profile": [{"id": f"p{i}-{j}", "text": f"old review {j}", "score": str(1 + j % 5)} for j in range(profile_len)],
        }
        for i in range(n)
    ]


def _outputs(qs, task="LaMP_3"):
    return {"task": task, "golds": [{"id": q["id"], "output": "4"} for q in qs]}


def _write(dir_: Path, split: str, questions, outputs=None, gz=False):
    dir_.mkdir(parents=True, exist_ok=True)
    ext = ".json.gz" if gz else ".json"
    for kind, obj in (("questions", questions), ("outputs", outputs)):
        if obj is None:
            continue
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        (dir_ / f"{split}_{kind}{ext}").write_bytes(gzip.compress(data) if gz else data)


def test_load_roundtrip(tmp_path):
    qs = _questions()
    _write(tmp_path, "dev", qs, _outputs(qs))
    split = load_split(tmp_path, "dev")
    assert split.task.name == "LaMP_3" and split.split == "dev" and len(split) == 2
    ex = split[0]
    assert ex.id == "q0" and ex.user_id == "u0" and ex.output == "4" and len(ex.profile) == 2
    assert split.golds() == {"q0": "4", "q1": "4"}
    assert list(split.users()) == ["u0", "u1"]
    assert split.questions_path.name == "dev_questions.json" and split.outputs_path.name == "dev_outputs.json"


def test_gzip_and_int_ids(tmp_path):
    qs = _questions()
    qs[0]["id"] = 310
    qs[0]["profile"][0]["id"] = 7
    qs[0]["profile"][0]["score"] = 5  # some files store numbers
    out = _outputs(qs)
    out["golds"][0]["id"] = 310
    _write(tmp_path, "train", qs, out, gz=True)
    split = load_split(tmp_path, "train")
    assert split.questions_path.name == "train_questions.json.gz"
    assert split[0].id == "310" and split[0].profile[0]["id"] == "7"
    assert split.task.history_text(split[0].profile[0]) == '5 is the score for "old review 0"'


def test_empty_profile_and_no_user_id(tmp_path):
    qs = _questions(1, profile_len=0)
    del qs[0]["user_id"]
    _write(tmp_path, "dev", qs, _outputs(qs))
    split = load_split(tmp_path, "dev")
    assert split[0].profile == [] and split[0].user_id is None
    assert list(split.users()) == ["q:q0"]


def test_test_split_without_outputs_needs_task(tmp_path):
    qs = _questions()
    _write(tmp_path, "test", qs)
    with pytest.raises(LaMPDataError, match="field 'task'"):
        load_split(tmp_path, "test")
    split = load_split(tmp_path, "test", task="lamp-3")
    assert split.outputs_path is None and split[0].output is None
    with pytest.raises(LaMPDataError, match="no outputs"):
        split.golds()


def test_explicit_task_wins_and_news_hint(tmp_path):
    qs = [{"id": "1", "input": "Which category ... article: x",
           "profile": [{"id": "a", "text": "t", "title": "h", "category": "sports"}]}]  # fmt: skip
    _write(tmp_path, "dev", qs, {"task": "LaMP_2", "golds": [{"id": "1", "output": "sports"}]})
    with pytest.raises(LaMPDataError, match=r"profile\[0\]\.description.*LaMP_2N"):
        load_split(tmp_path, "dev")
    assert load_split(tmp_path, "dev", task="LaMP_2N").task.name == "LaMP_2N"


def _bad(mutate):
    qs = _questions()
    out = _outputs(qs)
    mutate(qs, out)  # edits in place; its return value is ignored
    return qs, out


MALFORMED = [
    # (case, make (questions, outputs), expected file, record, field-or-problem)
    ("not json", lambda: (b"[{'id': 1}", None), "dev_questions.json", None, "not JSON"),
    ("outputs not json", lambda: (_questions(), b"<html>oops</html>"), "dev_outputs.json", None, "not JSON"),
    ("top level dict", lambda: ({"questions": []}, None), "dev_questions.json", None, "top level must be a list"),
    ("outputs top level list", lambda: (_questions(), []), "dev_outputs.json", None, "top level must be an object"),
    ("record not object", lambda: (["x"], None), "dev_questions.json", "record #0", "must be an object"),
    ("missing id", lambda: _bad(lambda q, o: q[1].pop("id")), "dev_questions.json", "record #1", "field 'id': missing"),
    ("missing input", lambda: _bad(lambda q, o: q[1].pop("input")), "dev_questions.json", "record q1", "field 'input': missing"),
    ("input not str", lambda: _bad(lambda q, o: q[0].update(input=3)), "dev_questions.json", "record q0", "field 'input': must be a string"),
    ("missing profile", lambda: _bad(lambda q, o: q[0].pop("profile")), "dev_questions.json", "record q0", "field 'profile': missing"),
    ("profile not list", lambda: _bad(lambda q, o: q[0].update(profile={})), "dev_questions.json", "record q0", "field 'profile': must be a list"),
    ("item lacks field", lambda: _bad(lambda q, o: q[1]["profile"][1].pop("score")), "dev_questions.json", "record q1", "field 'profile[1].score': missing"),
    ("item lacks id", lambda: _bad(lambda q, o: q[0]["profile"][0].pop("id")), "dev_questions.json", "record q0", "field 'profile[0].id': missing"),
    ("item field not text", lambda: _bad(lambda q, o: q[0]["profile"][1].update(text=None)), "dev_questions.json", "record q0", "field 'profile[1].text': must be text"),
    ("duplicate id", lambda: _bad(lambda q, o: q[1].update(id="q0")), "dev_questions.json", "record q0", "duplicate id"),
    ("bad user_id", lambda: _bad(lambda q, o: q[0].update(user_id=[1])), "dev_questions.json", "record q0", "field 'user_id'"),
    ("outputs missing id", lambda: _bad(lambda q, o: o["golds"].pop()), "dev_outputs.json", "record q1", "ids do not match"),
    ("outputs extra id", lambda: _bad(lambda q, o: o["golds"].append({"id": "zz", "output": "1"})), "dev_outputs.json", "record zz", "ids do not match"),
    ("outputs duplicate", lambda: _bad(lambda q, o: o["golds"].append({"id": "q0", "output": "1"})), "dev_outputs.json", "record q0", "duplicate id"),
    ("outputs missing output", lambda: _bad(lambda q, o: o["golds"][1].pop("output")), "dev_outputs.json", "record q1", "field 'output': missing"),
    ("unknown task", lambda: _bad(lambda q, o: o.update(task="LaMP_9")), "dev_outputs.json", None, "field 'task': unknown task 'LaMP_9'"),
    ("missing task", lambda: _bad(lambda q, o: o.pop("task")), "dev_outputs.json", None, "field 'task': missing"),
    ("golds not list", lambda: _bad(lambda q, o: o.update(golds={})), "dev_outputs.json", None, "field 'golds': must be a list"),
]


@pytest.mark.parametrize("case, make, fname, record, problem", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_inputs_one_line_error(tmp_path, case, make, fname, record, problem):
    qs, out = make()
    _write(tmp_path, "dev", qs, out)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(LaMPDataError) as e:
        load_split(tmp_path, "dev", task=None if out is not None else "LaMP_3")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(tmp_path / fname) + ":"), msg
    if record:
        assert f": {record}:" in msg, msg
    assert problem in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_missing_questions_file(tmp_path):
    with pytest.raises(LaMPDataError, match=r"dev_questions\.json: file not found"):
        load_split(tmp_path, "dev", task="LaMP_3")


def test_5000_item_profile_loads_fast(tmp_path):
    qs = _questions(3, profile_len=5000)
    _write(tmp_path, "train", qs, _outputs(qs))
    t0 = time.perf_counter()
    split = load_split(tmp_path, "train")
    elapsed = time.perf_counter() - t0
    assert len(split[2].profile) == 5000 and split[2].profile[-1]["id"] == "p2-4999"
    assert elapsed < 2.0, f"15,000 profile items took {elapsed:.2f}s"


def test_write_and_load_outputs(tmp_path):
    path = tmp_path / "sub" / "preds.json"
    write_outputs(path, "LaMP_3", {"b": "5", "a": "1"})
    obj = json.loads(path.read_text())
    assert obj == {"task": "LaMP_3", "golds": [{"id": "b", "output": "5"}, {"id": "a", "output": "1"}]}
    assert load_outputs(path) == ("LaMP_3", {"b": "5", "a": "1"})
    gz = tmp_path / "preds.json.gz"
    write_outputs(gz, "lamp-4", {"x": "A headline"})
    assert load_outputs(gz) == ("LaMP_4", {"x": "A headline"})


def test_write_outputs_failure_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_outputs(tmp_path / "preds.json", "LaMP_3", {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_write_split_roundtrip_and_hf_dataset(tmp_path):
    exs = [Example(id="1", input=Q3 + "nice", profile=[{"id": "p", "text": "ok", "score": "3"}], output="4", user_id="u")]
    write_split(tmp_path, "dev", "LaMP_3", exs)
    split = load_split(tmp_path, "dev")
    assert split[0] == exs[0]
    ds = split.to_hf_dataset()
    assert ds.num_rows == 1 and ds[0]["query"] == "nice"
    assert ds[0]["history"] == ['3 is the score for "ok"']
    assert json.loads(ds[0]["profile"]) == exs[0].profile
