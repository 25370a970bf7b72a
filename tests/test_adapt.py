"""Fast adaptation (new history -> new persona + new user prefix, no training) and slow adaptation
(retrain, validate, promote / refuse, rollback, lock, idempotence), on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch

from pplug.adapt.fast import AdaptError, add_history, item_example, user_batch
from pplug.adapt.slow import adapt
from pplug.core.checkpoints import (
    LATEST_FILE,
    REPORT_FILE,
    CheckpointError,
    RunBusyError,
    resolve,
    rollback,
    run_lock,
    serving_version,
    versions,
)
from pplug.core.tasks import get_task
from pplug.lamp.data import read_items
from pplug.store.sqlite import UserStore
from pplug.train.config import TrainConfig

LAMP3 = get_task("LaMP_3")


def _reviews(n: int, start: int = 0, score: str = "4") -> list[dict]:
    words = ["battery", "screen", "sound", "price", "service", "delivery"]
    return [{"id": f"r{start + i}", "text": f"the {words[(start + i) % 6]} was fine number {start + i}", "score": score}
            for i in range(n)]


@pytest.fixture(scope="module")
def parts(tiny_config, tmp_path_factory):
    """One tiny model (its frozen LLM and encoder are shared by every test here) and its checkpoint."""
    from pplug.encode.history import HistoryEncoder
    from pplug.modeling.model import PPlugModel

    cache = tmp_path_factory.mktemp("cache") / "emb.sqlite"
    encoder = HistoryEncoder(tiny_config.encoder_name_or_path, cache_path=cache)
    torch.manual_seed(0)
    model = PPlugModel.from_config(tiny_config, history_encoder=encoder)
    final = tmp_path_factory.mktemp("base") / "final"
    model.save_pretrained(final)
    return model, encoder, final


@pytest.fixture
def root(parts, tmp_path):
    """A fresh run folder holding a copy of the base checkpoint as final/."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(parts[2], run / "final")
    return run


@pytest.fixture
def store(tmp_path):
    s = UserStore(tmp_path / "store.sqlite")
    yield s
    s.close()


def _adapt(store, root, parts, **kw):
    kw.setdefault("log", lambda m: None)
    return adapt(store, root, embedding_cache=parts[1].cache.path, device="cpu", **kw)


# --- fast adaptation ---


def test_add_history_changes_persona_and_user_prefix(parts, store):
    model, encoder, _ = parts
    store.create_user("ana", {"identity": {"name": "Ana"}, "preference": {"styles": ["concise"]}}, task="LaMP_3")
    before_weights = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    x = "What is the score of the following review? review: the battery was fine"

    res = add_history(store, "ana", _reviews(3, score="2"), encoder)
    assert res.ids == [1, 2, 3] and res.persona_version == 2
    assert {"op": "add", "path": "/pattern", "value": store.persona("ana").to_dict()["pattern"]} in res.diff
    b1 = user_batch(store, "ana", [x], LAMP3)
    assert len(b1.histories[0]) == 3
    assert "mean rating 2.0" in b1.prompts[0] and "concise" in b1.prompts[0]  # persona text in the prompt
    with torch.no_grad():
        p1 = model.prefix(b1)
    calls = encoder.encoder_calls

    res = add_history(store, "ana", _reviews(3, start=3, score="5"), encoder)
    assert res.persona_version == 3
    assert {"op": "replace", "path": "/pattern/activity_count", "old": 3, "value": 6} in res.diff
    assert encoder.encoder_calls == calls + 1  # embedded once, at add time
    b2 = user_batch(store, "ana", [x], LAMP3)
    assert encoder.encoder_calls == calls + 1  # building the batch re-used the cache
    assert "mean rating 3.5" in b2.prompts[0]
    with torch.no_grad():
        p2 = model.prefix(b2)
        p2_no_persona = model.prefix(user_batch(store, "ana", [x], LAMP3, use_persona=False))
    assert p1.shape == p2.shape
    assert not torch.allclose(p1, p2)  # the user's soft prompt moved with the new history...
    assert torch.equal(p2, p2_no_persona)  # ...which alone drives it (the persona text is prompt-only)
    for k, v in model.trainable_state_dict().items():  # ...without any training
        assert torch.equal(v, before_weights[k])
    log = store.persona_log("ana")
    assert [c.source for c in log] == ["create", "derived", "derived"]
    assert store.count_interactions("ana") == 6
    assert len(store.memory_vectors("ana", encoder.identity)[0]) == 6  # long-term memory filled at once


def test_add_history_bad_item_names_field(parts, store):
    store.create_user("ana", task="LaMP_3")
    with pytest.raises(ValueError, match="field 'score': missing"):
        add_history(store, "ana", [{"id": "r1", "text": "no score"}], parts[1])
    assert store.count_interactions("ana") == 0  # nothing half-added


def test_proposer_runs_every_k_interactions(parts, store):
    store.create_user("ana", task="LaMP_3")
    seen = []

    def proposer(persona, items, task):
        seen.append(len(items))
        return {"personality": {"interests": ["gadgets"]}}

    r1 = add_history(store, "ana", _reviews(3), parts[1], proposer=proposer, propose_every=4)
    assert seen == [] and r1.proposed == []
    r2 = add_history(store, "ana", _reviews(2, start=3), parts[1], proposer=proposer, propose_every=4)
    assert seen == [4]
    assert r2.proposed == [{"op": "add", "path": "/personality", "value": {"interests": ["gadgets"]}}]
    assert store.persona_log("ana")[-1].source == "proposer"
    assert store.persona("ana").personality.interests == ["gadgets"]


def test_item_example_and_read_items(tmp_path):
    ex = item_example(LAMP3, {"text": "great", "score": "5"}, [{"text": "x", "score": "1"}], "7", "ana")
    assert ex.input.endswith("review: great") and ex.output == "5" and len(ex.profile) == 1
    with pytest.raises(AdaptError, match="cannot be retrained"):
        item_example(get_task("LaMP_1"), {"title": "t", "abstract": "a"}, [], "1")
    f = tmp_path / "h.jsonl"
    f.write_text('{"text": "a", "score": "1"}\n\n{"text": "b", "score": "2"}\n', encoding="utf-8")
    assert [it["text"] for it in read_items(str(f))] == ["a", "b"]
    f.write_text(json.dumps({"profile": [{"text": "c", "score": "3"}]}), encoding="utf-8")
    assert read_items(str(f)) == [{"text": "c", "score": "3"}]


# --- slow adaptation ---


def _fill(store, parts, n=12, start=0, user="ana", score="4"):
    if not store.has_user(user):
        store.create_user(user, task="LaMP_3")
    add_history(store, user, _reviews(n, start=start, score=score), parts[1])


def test_adapt_promotes_noops_refuses_and_rolls_back(parts, store, root):
    assert serving_version(root) == "final"
    _fill(store, parts, n=4)
    res = _adapt(store, root, parts, min_new=8)
    assert res.status == "noop" and "4 new" in res.message and versions(root) == []

    _fill(store, parts, n=8, start=4)
    res = _adapt(store, root, parts, min_new=8, metric="loss", training=TrainConfig(lr=3e-3, epochs=3))
    assert res.status == "promoted", res.message
    assert res.version == "v0001" and (root / LATEST_FILE).read_text().strip() == "v0001"
    assert sorted(p.name for p in (root / "v0001").iterdir()) == [REPORT_FILE, "pplug.safetensors",
                                                                  "pplug_config.json"]
    report = json.loads((root / "v0001" / REPORT_FILE).read_text())
    assert report["parent"] == "final" and report["n_interactions"] == 12
    assert report["n_train"] + report["n_val"] == 12 and report["watermark"] == 12
    assert report["validation"]["candidate"]["loss"] < report["validation"]["parent"]["loss"]
    assert report["train"]["lr"] == 3e-3 and report["train"]["epochs"] == 3  # the TrainConfig it trained with
    assert resolve(root) == root / "v0001"

    res = _adapt(store, root, parts, min_new=8, metric="loss")
    assert res.status == "noop" and versions(root) == ["v0001"]  # idempotent: nothing new

    # A worse candidate is refused and v0001 keeps serving. (A tiny random LLM barely reacts to its
    # soft prompt, so "worse" is forced by the validation function: parent first, then the candidate.)
    _fill(store, parts, n=10, start=12)
    figures = iter([{"loss": 1.0}, {"loss": 1.5}])
    res = _adapt(store, root, parts, min_new=8, metric="loss", evaluate_fn=lambda model, examples: next(figures))
    assert res.status == "refused", res.message
    assert res.report["validation"] == {"parent": {"loss": 1.0}, "candidate": {"loss": 1.5}}
    assert res.report["parent"] == "v0001" and res.report["n_interactions"] == 10
    assert versions(root) == ["v0001"] and serving_version(root) == "v0001"
    state = json.loads((root / "adapt_state.json").read_text())
    assert [a["promoted"] for a in state["attempts"]] == [True, False]
    res = _adapt(store, root, parts, min_new=8, metric="loss")
    assert res.status == "noop" and "last attempt" in res.message  # the refused window is not retried

    # The task's main metric (MAE via pplug.lamp.metrics.score) decides by default.
    _fill(store, parts, n=6, start=22, user="bob", score="2")
    res = _adapt(store, root, parts, min_new=8, training=TrainConfig(lr=3e-3, epochs=2))
    v = res.report["validation"]
    assert res.report["metric"] == "mae" and set(v["parent"]) == {"mae", "rmse"}
    assert res.status == ("promoted" if v["candidate"]["mae"] <= v["parent"]["mae"] else "refused")
    assert res.report["n_users"] == 2

    if res.status == "promoted":
        assert rollback(root) == "v0001"
    assert rollback(root) == "final"
    assert serving_version(root) == "final"
    with pytest.raises(CheckpointError, match="no parent version"):
        rollback(root)


def test_custom_validation_refuses_deterministically(parts, store, root):
    _fill(store, parts, n=10)
    figures = iter([{"mae": 0.5}, {"mae": 0.9}])  # parent first, then the candidate
    res = _adapt(store, root, parts, min_new=5, training=TrainConfig(epochs=1), evaluate_fn=lambda model, examples: next(figures))
    assert res.status == "refused" and "mae 0.5000 -> 0.9000" in res.message
    assert not (root / LATEST_FILE).exists() and versions(root) == []


def test_lock_prevents_a_concurrent_run(parts, store, root):
    _fill(store, parts, n=10)
    with run_lock(root):
        with pytest.raises(RunBusyError, match="another adapt run is in progress"):
            _adapt(store, root, parts, min_new=5)
        with pytest.raises(RunBusyError):
            rollback(root)
    assert versions(root) == []


def test_interrupted_run_keeps_last_good_version(parts, store, root, monkeypatch):
    from pplug.modeling.model import PPlugModel

    _fill(store, parts, n=10)

    def killed(self, out_dir):  # the process "dies" half-way through writing the new version
        from pathlib import Path

        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "pplug.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(PPlugModel, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        _adapt(store, root, parts, min_new=5, metric="loss", training=TrainConfig(lr=3e-3, epochs=2), evaluate_fn=lambda m, e: {"loss": 1.0})
    assert serving_version(root) == "final" and versions(root) == []
    assert list(root.glob(".tmp-v*"))  # debris of the killed run...
    monkeypatch.undo()
    res = _adapt(store, root, parts, min_new=5, metric="loss", evaluate_fn=lambda m, e: {"loss": 1.0})
    assert res.status == "promoted" and versions(root) == ["v0001"]
    assert not list(root.glob(".tmp-v*"))  # ...is cleared by the next run


# --- command line ---


def test_cli_life_cycle(parts, tmp_path, root, monkeypatch, capsys, tiny_encoder_dir):
    from pplug.cli.main import main

    monkeypatch.setenv("PPLUG_CACHE_DIR", str(tmp_path / "cache"))
    db = str(tmp_path / "cli.sqlite")
    persona = tmp_path / "ana.yaml"
    persona.write_text("identity: {name: Ana}\npreference: {styles: [concise]}\n", encoding="utf-8")
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps(_reviews(3, score="5")), encoding="utf-8")

    assert main(["user", "create", "ana", "--persona", str(persona), "--store", db]) == 0
    assert "persona v1" in capsys.readouterr().out
    assert main(["user", "create", "ana", "--store", db]) == 2
    assert "already exists" in capsys.readouterr().err
    enc = ["--encoder", str(tiny_encoder_dir)]
    assert main(["user", "add-history", "ana", str(hist), "--store", db, *enc]) == 0
    out = capsys.readouterr().out
    assert "added 3 interactions" in out and "persona v2" in out and "+ /pattern" in out
    assert main(["user", "show", "ana", "--store", db]) == 0
    out = capsys.readouterr().out
    assert "history: 3 LaMP_3 interactions" in out and "v2 " in out and "derived" in out and "name: Ana" in out
    gen = ["user", "generate", "ana", "--checkpoint", str(root), "--input", "great battery", "--store", db]
    assert main([*gen, "--show-prompt"]) == 0
    out = capsys.readouterr().out
    assert "3 history items" in out and "review: great battery" in out and "mean rating 5.0" in out
    assert out.strip().splitlines()[-1] in LAMP3.labels
    assert main(["user", "show", "bob", "--store", db]) == 2
    assert "unknown user 'bob'" in capsys.readouterr().err
    assert main(["adapt", "--store", db, "--checkpoint", str(root), "--min-new", "8"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["adapt", "--rollback", "--checkpoint", str(root)]) == 2
    assert "no parent version" in capsys.readouterr().err
