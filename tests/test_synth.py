"""Synthetic data: deterministic, loadable, and personal (history beats the history-blind ceiling)."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest

from pplug.cli.main import main
from pplug.lamp.data import load_split
from pplug.lamp.metrics import score
from pplug.synth.generate import REPORT_NAME, SynthConfig, ensure_default_data, make_synthetic
from pplug.synth.vocab import movie_candidates, text_sentiment

SMALL = dict(n_users=40, min_history=10, max_history=14, min_train=4, max_train=6)


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    out = tmp_path_factory.mktemp("ratings")
    return out, make_synthetic(out, kind="ratings", seed=3, **SMALL)


def test_deterministic_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_synthetic(a, kind="ratings", seed=1, **SMALL)
    make_synthetic(b, kind="ratings", seed=1, **SMALL)
    make_synthetic(c, kind="ratings", seed=2, **SMALL)
    for name in ("train_questions.json", "train_outputs.json", "dev_questions.json", "dev_outputs.json", REPORT_NAME):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "dev_outputs.json").read_bytes() != (c / "dev_outputs.json").read_bytes()


def test_roundtrip_through_loader(ratings):
    out, report = ratings
    train, dev = load_split(out, "train"), load_split(out, "dev")
    assert train.task.name == dev.task.name == report["task"] == "LaMP_3"
    assert len(train) == report["splits"]["train"] and len(dev) == report["splits"]["dev"] == 2 * SMALL["n_users"]
    # dev = the later questions of the same users, and every profile holds only that user's earlier items
    assert set(train.users()) == set(dev.users())
    for ex in list(train)[:50] + list(dev):
        assert 10 <= len(ex.profile) <= 40
        assert all(it["id"].startswith(ex.user_id + "-") for it in ex.profile)
        dates = [it["date"] for it in ex.profile]
        assert dates == sorted(dates)
        words = len(train.task.query_text(ex.input).split())
        assert 5 <= words <= 20
        assert ex.output in train.task.labels
    last_train = {u: exs[-1] for u, exs in train.users().items()}
    for u, exs in dev.users().items():
        assert exs[0].profile[-1]["id"] > last_train[u].profile[-1]["id"]


def test_text_alone_does_not_reveal_the_user(ratings):
    out, _ = ratings
    dev = load_split(out, "dev")
    users = dev.users()
    # the same sentiment distribution for harsh and generous users: text carries no user signal
    bias = {u: statistics.mean(float(it["score"]) - text_sentiment(it["text"]) for it in exs[0].profile)
            for u, exs in users.items()}  # fmt: skip
    harsh = [text_sentiment(dev.task.query_text(e.input)) for u, exs in users.items() if bias[u] < -0.5 for e in exs]
    kind = [text_sentiment(dev.task.query_text(e.input)) for u, exs in users.items() if bias[u] > 0.5 for e in exs]
    assert harsh and kind
    assert abs(statistics.mean(harsh) - statistics.mean(kind)) < 0.8


def _history_oracle(split):
    """Reads each user's offset off their profile (median of score - sentiment) and applies it."""
    preds = {}
    for ex in split:
        s = text_sentiment(split.task.query_text(ex.input))
        off = statistics.median_low([float(it["score"]) - text_sentiment(it["text"]) for it in ex.profile])
        preds[ex.id] = str(int(min(5, max(1, s + off))))
    return preds


def test_history_oracle_beats_ceiling(ratings):
    out, report = ratings
    dev = load_split(out, "dev")
    ceiling = report["history_blind_ceiling"]
    assert set(ceiling) == {"mae", "rmse"}
    # recompute the ceiling independently: best per-sentiment constant, pooled over users
    by_s = {}
    for ex in dev:
        by_s.setdefault(text_sentiment(dev.task.query_text(ex.input)), []).append(float(ex.output))
    blind = {ex.id: str(statistics.median_low(by_s[text_sentiment(dev.task.query_text(ex.input))])) for ex in dev}
    assert score("LaMP_3", blind, dev.golds())["mae"] == pytest.approx(ceiling["mae"])
    oracle = score("LaMP_3", _history_oracle(dev), dev.golds())
    assert oracle["mae"] < ceiling["mae"] - 0.4, (oracle, ceiling)
    assert oracle["rmse"] < ceiling["rmse"] - 0.3
    assert report["history_oracle"]["mae"] == pytest.approx(oracle["mae"])
    # a model that knows the user but ignores the text is not enough either
    assert report["user_mean_floor"]["mae"] > oracle["mae"] + 0.4
    assert report["history_blind_ceiling_expected"]["mae"] > 0.5


def test_tags_kind(tmp_path):
    report = make_synthetic(tmp_path, kind="tags", seed=0, **SMALL)
    dev = load_split(tmp_path, "dev")
    assert dev.task.name == report["task"] == "LaMP_2"
    for ex in dev:
        assert ex.output in movie_candidates(dev.task.query_text(ex.input))
        assert ex.output in dev.task.labels
        assert all(it["tag"] in dev.task.labels for it in ex.profile)
    assert report["history_oracle"]["accuracy"] > report["history_blind_ceiling"]["accuracy"] + 0.2


def test_titles_kind(tmp_path):
    report = make_synthetic(tmp_path, kind="titles", seed=0, **SMALL)
    dev = load_split(tmp_path, "dev")
    assert dev.task.name == "LaMP_5"
    assert report["history_oracle"]["rougeL"] > report["history_blind_ceiling"]["rougeL"] + 0.15


def test_config_validation():
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        SynthConfig(kind="poems")
    with pytest.raises(ValueError, match="noise"):
        SynthConfig(noise=0.7)


def test_default_sizes_match_the_training_budget(tmp_path):
    report = make_synthetic(tmp_path, kind="ratings")
    assert 100 <= report["users"] <= 200
    assert report["profile_size"]["min"] >= 10 and report["profile_size"]["max"] <= 40
    assert report["splits"]["dev"] == 2 * report["users"]
    per_user = Counter(ex.user_id for ex in load_split(tmp_path, "train"))
    assert min(per_user.values()) >= 8 and max(per_user.values()) <= 16


def test_ensure_default_data_writes_once(tmp_path):
    folder = ensure_default_data(tmp_path / "synthetic", kind="ratings")
    assert folder == tmp_path / "synthetic" / "ratings"
    report = json.loads((folder / REPORT_NAME).read_text())
    assert report["history_blind_ceiling"]["mae"] > report["history_oracle"]["mae"]
    mtime = (folder / "train_questions.json").stat().st_mtime_ns
    assert ensure_default_data(tmp_path / "synthetic", kind="ratings") == folder
    assert (folder / "train_questions.json").stat().st_mtime_ns == mtime
    (folder / "dev_outputs.json").unlink()  # partial folder -> regenerated
    ensure_default_data(tmp_path / "synthetic", kind="ratings")
    assert load_split(folder, "dev").golds()


def test_cli_synth(tmp_path, capsys):
    rc = main(["synth", "--kind", "tags", "--out", str(tmp_path), "--users", "12", "--seed", "5"])
    assert rc == 0
    assert (tmp_path / "dev_questions.json").is_file() and (tmp_path / REPORT_NAME).is_file()
    assert "history_blind_ceiling" in capsys.readouterr().out


# --- domain shift: train unchanged, dev from other items, the user's trait survives -------------------


def test_domain_shift_ratings_keeps_train_and_the_personal_signal(tmp_path):
    from pplug.synth.vocab import PRODUCTS, SENTIMENT_PHRASES, SHIFTED_PRODUCTS, SHIFTED_SENTIMENT_PHRASES

    plain, shifted = tmp_path / "plain", tmp_path / "shifted"
    make_synthetic(plain, kind="ratings", seed=4, **SMALL)
    report = make_synthetic(shifted, kind="ratings", seed=4, domain_shift=True, **SMALL)
    for name in ("train_questions.json", "train_outputs.json"):
        assert (plain / name).read_bytes() == (shifted / name).read_bytes(), name
    train, dev = load_split(shifted, "train"), load_split(shifted, "dev")
    assert len(dev) == 2 * SMALL["n_users"] and set(dev.users()) == set(train.users())
    assert report["config"]["domain_shift"] is True and report["dev_domain"].startswith("shifted")
    old_words = [p for ps in SENTIMENT_PHRASES.values() for p in ps] + [f"The {p} " for p in PRODUCTS]
    new_phrases = [p for ps in SHIFTED_SENTIMENT_PHRASES.values() for p in ps]
    for ex in dev:
        texts = [dev.task.query_text(ex.input)] + [it["text"] for it in ex.profile]
        assert ex.profile and all(it["id"].startswith(ex.user_id + "-x") for it in ex.profile)
        for t in texts:  # every dev text, question and history alike, is in the other domain's words
            assert not any(w in t for w in old_words), t
            assert any(p in t for p in new_phrases) and any(f"The {p} " in t for p in SHIFTED_PRODUCTS), t
    # no phrase of one domain hides inside a phrase of the other (text_sentiment would misread it)
    for a in old_words[:20]:
        assert not any(a in b or b in a for b in new_phrases)
    # the user's offset carries over: reading it off the shifted history still beats the history-blind ceiling
    assert report["history_oracle"]["mae"] < report["history_blind_ceiling"]["mae"] - 0.4
    assert {"history_blind_ceiling", "user_mean_floor", "global_constant"} <= set(report)


def test_domain_shift_titles_and_tags(tmp_path):
    from pplug.synth.vocab import SHIFTED_TOPICS, TOPICS, paper_topic_method

    report = make_synthetic(tmp_path, kind="titles", seed=0, domain_shift=True, **SMALL)
    dev = load_split(tmp_path, "dev")
    for ex in dev:
        topic, _ = paper_topic_method(dev.task.query_text(ex.input))
        assert topic in SHIFTED_TOPICS and topic not in TOPICS
    assert report["history_oracle"]["rougeL"] > report["history_blind_ceiling"]["rougeL"] + 0.15
    with pytest.raises(ValueError, match="domain_shift"):
        SynthConfig(kind="tags", domain_shift=True)


def test_cli_synth_domain_shift(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--users", "10", "--domain-shift"]) == 0
    assert json.loads((tmp_path / REPORT_NAME).read_text())["config"]["domain_shift"] is True
    assert "history_blind_ceiling" in capsys.readouterr().out
