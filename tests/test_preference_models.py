"""Facet preference models (length, formality, topic), their retrieval per user and reward-mbr decoding."""

from __future__ import annotations

import dataclasses

import pytest
from fakes import BagOfWords

from pplug.core.tasks import get_task
from pplug.decode.choose import DecodingSpec, RowContext, decode_rows, user_outputs
from pplug.decode.preference import FacetModel, PreferenceModelError, PreferenceSet, summarise_user
from pplug.lamp.data import Example
from pplug.methods.batches import build_batch
from pplug.train.preference import PrefsTrainConfig, train_preference_models

T6 = get_task("LaMP_6")


VOCAB = ("budget review forecast numbers quarterly planning meeting council vote agenda report minutes "
         "revenue costs hiring offsite schedule deadline draft contract").split()


def _users(n: int, words: tuple[int, int], title: bool, seed: int = 0) -> list[list[str]]:
    import random

    rng = random.Random(seed)
    out = []
    for u in range(n):
        vocab = VOCAB[(u * 3) % len(VOCAB):] + VOCAB[: (u * 3) % len(VOCAB)]
        items = []
        for _ in range(8):
            ws = [rng.choice(vocab[:8]) for _ in range(rng.randint(*words))]
            items.append(" ".join(w.capitalize() for w in ws) if title else " ".join(ws))
        out.append(items)
    return out


FAST = PrefsTrainConfig(max_users=None, items_per_user=6, epochs=15, batch_size=64, lr=2e-2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Facet models trained on users who all write short, title-cased outputs about their own words."""
    enc = BagOfWords()
    out = tmp_path_factory.mktemp("prefs") / "prefs"
    models = train_preference_models(enc, _users(40, (1, 3), title=True), FAST, "LaMP_6", out)
    return enc, out, models


def test_each_facet_model_ranks_the_constructed_preferred_candidate_first(trained):
    enc, out, models = trained
    prefs = PreferenceSet.from_pretrained(out, enc)  # from the folder alone
    assert prefs.names == ["formality", "length", "topic"]
    user = summarise_user(enc, ["Budget Review", "Quarterly Budget", "Budget Numbers", "Forecast"])
    length = prefs.scores(["Budget Forecast", "Budget Forecast Numbers Review Quarterly Planning Meeting Costs "
                           "Hiring Deadline Contract"], user)["length"]
    assert length[0] > length[1]  # brevity: the short candidate first
    formality = prefs.scores(["Budget Forecast Review", "budget forecast review"], user)["formality"]
    assert formality[0] > formality[1]
    topic = prefs.scores(["Budget Forecast Numbers", "Football Tourney Tickets"], user)["topic"]
    assert topic[0] > topic[1]
    acc = {f: m.training_record["val_pair_accuracy"] for f, m in models.items()}  # held-out users' pairs
    assert acc["length"] > 0.9 and acc["formality"] > 0.9 and acc["topic"] > 0.6
    # weighted reward and cold start: no past outputs, no reward
    r = prefs.reward(["Budget", "budget forecast numbers review quarterly planning"], user,
                     {"length": 0.5, "formality": 0.5})
    assert r[0] > r[1]
    assert summarise_user(enc, []) is None


def test_bad_folders_and_another_encoder_are_one_clear_line(trained, tmp_path):
    enc, out, _ = trained
    with pytest.raises(PreferenceModelError, match=r"config\.json: missing"):
        FacetModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PreferenceModelError, match="no facet folders"):
        PreferenceSet.from_pretrained(tmp_path / "empty", enc)

    class Other(BagOfWords):
        identity = "another-encoder"

    with pytest.raises(PreferenceModelError, match=r"field 'encoder': trained with encoder 'bag-of-words-64'") as e:
        PreferenceSet.from_pretrained(out, Other())
    assert "\n" not in str(e.value)
    broken = tmp_path / "broken" / "length"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text((out / "length" / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PreferenceModelError, match="model.safetensors: unreadable"):
        FacetModel.from_pretrained(broken, enc)
    with pytest.raises(ValueError, match="reward-mbr needs preference_models"):
        DecodingSpec("reward-mbr")


def test_retrieval_weights_follow_the_persona_text():
    from pplug.encode.history import HistoryEncoder

    enc = HistoryEncoder("default", cache_path=":memory:", device="cpu")  # the real MiniLM, offline
    models = train_preference_models(enc, _users(12, (1, 3), title=True),
                                     dataclasses.replace(FAST, epochs=2), "LaMP_6")
    prefs = PreferenceSet(models, enc)
    brief, styled, cold = prefs.weights([
        "Prefers: short outputs; about 2 words per output.",
        "Prefers: output style title case; capitalised words and colon subtitles.", ""])
    assert brief["length"] > brief["formality"] and styled["formality"] > styled["length"]
    assert brief != styled and abs(sum(brief.values()) - 1) < 1e-6
    assert cold == {n: pytest.approx(1 / 3) for n in prefs.names}  # cold start: uniform


def _examples() -> list[Example]:
    prof = [{"id": f"p{k}", "text": f"the city council voted on item {k}", "title": f"Council Vote {k}"}
            for k in range(4)]
    texts = ["the city council voted on a new budget", "good morning everyone", "we propose a new method"]
    return [Example(id=f"r{i}", input=T6.make_input(t), profile=prof[: i + 2], output="x") for i, t in enumerate(texts)]


def test_reward_mbr_per_row_sets_and_weights_in_one_batch_equal_rows_alone(gen_model, tmp_path):
    enc = gen_model.history_encoder
    cfg = dataclasses.replace(FAST, epochs=2)
    train_preference_models(enc, _users(12, (1, 3), title=True), cfg, "LaMP_6", tmp_path / "all")
    train_preference_models(enc, _users(12, (4, 8), title=False), dataclasses.replace(cfg, facets=("length",)),
                            "LaMP_6", tmp_path / "length")
    exs = _examples()
    specs = [DecodingSpec("reward-mbr", num_samples=4, temperature=5.0, preference_models=str(tmp_path / "all")),
             DecodingSpec("reward-mbr", num_samples=3, temperature=6.0, preference_weight=0.9, seed=1,
                          preference_models=str(tmp_path / "length")),
             DecodingSpec("reward-mbr", num_samples=4, temperature=5.0, preference_weight=1.0,
                          preference_models=str(tmp_path / "all"))]
    weights = [None, None, {"topic": 0.2, "length": 0.8}]  # row 3: its own facet weights, rows 1-2 retrieved

    def ctx(idx):
        return RowContext(keys=[exs[i].id for i in idx], user_outputs=[user_outputs(T6, exs[i].profile) for i in idx],
                          profiles=[exs[i].profile for i in idx], facet_weights=[weights[i] for i in idx])

    batch = build_batch(T6, exs, "pplug", with_targets=False, max_history=8)
    together = decode_rows(gen_model, batch, specs, 8, ctx([0, 1, 2]))
    alone = [decode_rows(gen_model, build_batch(T6, [exs[i]], "pplug", with_targets=False, max_history=8),
                         [specs[i]], 8, ctx([i]))[0] for i in range(3)]
    assert together == alone
    # w = 0 is MBR itself: the reward only reorders through its weight
    mbr = decode_rows(gen_model, batch, [dataclasses.replace(s, name="mbr") for s in specs], 8, ctx([0, 1, 2]))
    zero = decode_rows(gen_model, batch, [dataclasses.replace(s, preference_weight=0.0) for s in specs], 8,
                       ctx([0, 1, 2]))
    assert zero == mbr


def test_prefs_train_and_evaluate_reward_mbr_from_the_command_line(gen_model, tiny_config, tmp_path):
    import json

    from pplug.cli.main import main
    from pplug.lamp.data import write_split

    users = _users(12, (1, 3), title=True)
    train = [Example(id=f"t{u}", input=T6.make_input("an email body"), output=outs[0],
                     profile=[{"id": f"t{u}-{k}", "text": "body", "title": o} for k, o in enumerate(outs[1:])])
             for u, outs in enumerate(users)]
    write_split(tmp_path / "data", "train", "LaMP_6", train)
    write_split(tmp_path / "data", "dev", "LaMP_6", _examples())
    prefs = tmp_path / "prefs"
    rc = main(["prefs", "train", "--data", str(tmp_path / "data"), "--out", str(prefs), "--epochs", "2",
               "--encoder", tiny_config.encoder_name_or_path, "--embedding-cache", str(tmp_path / "emb.sqlite")])
    assert rc == 0 and sorted(p.name for p in prefs.iterdir()) == ["formality", "length", "topic"]
    doc = json.loads((prefs / "length" / "config.json").read_text())
    assert doc["config"]["facet"] == "length" and doc["config"]["description"] and doc["training"]["pairs"] > 0
    gen_model.save_pretrained(tmp_path / "run" / "final")
    out = tmp_path / "eval" / "preds.json"
    rc = main(["evaluate", "--checkpoint", f"pplug={tmp_path / 'run' / 'final'}", "--data", str(tmp_path / "data"),
               "--method", "pplug", "--decoding", "mbr", "reward-mbr", "--num-samples", "2", "--temperature", "4",
               "--max-new-tokens", "6", "--out", str(out), "--preference-models", str(prefs),
               "--embedding-cache", str(tmp_path / "emb.sqlite")])
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "preds.metrics.json").read_text())
    assert set(report["metrics"]) == {"pplug [mbr]", "pplug [reward-mbr]"}
    assert main(["evaluate", "--checkpoint", f"pplug={tmp_path / 'run' / 'final'}", "--data",
                 str(tmp_path / "data"), "--method", "pplug", "--decoding", "reward-mbr", "--out", str(out)]) == 2
