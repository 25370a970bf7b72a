"""pplug.lamp.slices: cold-start and time-shift slices, written as LaMP folders evaluate reads."""

from __future__ import annotations

import pytest

from pplug.lamp.data import Example, load_split
from pplug.lamp.slices import cold_start, later_than_training, latest_items, time_shift_holdout, write_slice


def _ex(qid: str, user: str, n_items: int, dated: bool = False, output: str = "3") -> Example:
    items = []
    for k in range(n_items):
        it = {"id": f"{user}-{k}", "text": f"review {k}", "score": "4"}
        if dated:
            it["date"] = f"2020-01-{n_items - k:02d}"  # file order newest first: the latest item is the first
        items.append(it)
    return Example(id=qid, input=f"review: text of {qid}", profile=items, output=output, user_id=user)


def test_latest_items_by_date_else_file_order():
    dated = _ex("q", "u", 6, dated=True).profile
    assert [it["id"] for it in latest_items(dated, 2)] == ["u-1", "u-0"]
    plain = _ex("q", "u", 6).profile
    assert [it["id"] for it in latest_items(plain, 2)] == ["u-4", "u-5"]
    assert latest_items(plain, 0) == []


def test_cold_start_natural_when_enough():
    exs = [_ex(f"q{i}", f"u{i}", 2 + i % 6) for i in range(30)]
    sl, note = cold_start(exs, max_items=4, min_n=5)
    assert note.startswith("natural") and sl and all(len(ex.profile) <= 4 for ex in sl)
    assert len(sl) == sum(len(ex.profile) <= 4 for ex in exs)


def test_cold_start_truncates_when_too_few_and_leaves_source_alone():
    exs = [_ex(f"q{i}", f"u{i}", 10, dated=True) for i in range(8)] + [_ex("q8", "u8", 3)]
    sl, note = cold_start(exs, max_items=4, min_n=5)
    assert note.startswith("truncated") and len(sl) == len(exs)
    assert all(len(ex.profile) <= 4 for ex in sl)
    assert [it["id"] for it in sl[0].profile] == ["u0-3", "u0-2", "u0-1", "u0-0"]  # the 4 latest by date
    assert sl[8] is exs[8] and len(exs[0].profile) == 10  # originals untouched
    assert [ex.id for ex in sl] == [ex.id for ex in exs] and [ex.output for ex in sl] == [ex.output for ex in exs]


def test_time_shift_holds_out_each_users_latest():
    train = [_ex("a1", "a", 3), _ex("a2", "a", 5), _ex("a3", "a", 4), _ex("b1", "b", 7), _ex("c1", "c", 2),
             _ex("c2", "c", 3)]
    fit, held = time_shift_holdout(train)
    assert [ex.id for ex in held] == ["a2", "c2"]  # longest history = latest; b has a single question
    assert [ex.id for ex in fit] == ["a1", "a3", "b1", "c1"]
    fit, held = time_shift_holdout(train, latest=2)
    assert [ex.id for ex in held] == ["a2", "a3"]  # a's two latest; c has only 2 questions, b one: kept
    assert [ex.id for ex in fit] == ["a1", "b1", "c1", "c2"]
    with pytest.raises(ValueError, match="at least 1"):
        time_shift_holdout(train, latest=0)


def test_later_than_training_keeps_dated_dev_questions_after_the_users_training():
    train = [_ex("a1", "a", 3, dated=True), _ex("a2", "a", 5, dated=True), _ex("b1", "b", 7, dated=True),
             _ex("c1", "c", 2)]
    dev = [_ex("da", "a", 6, dated=True),    # after all of a's training questions: kept
           _ex("da0", "a", 4, dated=True),   # before a2: not a time shift
           _ex("db", "b", 7, dated=True),    # same latest date as b1: kept (at or after)
           _ex("dc", "c", 9, dated=True),    # c's training question is undated: cannot be placed
           _ex("dd", "d", 8, dated=True)]    # d never trained on: a new user, not a time shift
    later, note = later_than_training(train, dev)
    assert [ex.id for ex in later] == ["da", "db"] and note.startswith("2 of 4")
    undated, why = later_than_training([_ex("a1", "a", 3)], [_ex("da", "a", 6)])
    assert undated == [] and "1 users have undated histories" in why
    assert later_than_training(train, [_ex("dd", "d", 8, dated=True)])[0] == []


def test_write_slice_links_train_and_loads(tmp_path):
    src = tmp_path / "src"
    train = [_ex(f"t{i}", f"u{i % 3}", 5) for i in range(6)]
    write_slice(src, "train", "LaMP_3", train)
    sl, _ = cold_start([_ex(f"d{i}", f"u{i}", 9) for i in range(4)], min_n=10)
    out = write_slice(tmp_path / "slices", "cold_start", "LaMP_3", sl, train_from=src)
    loaded = load_split(out, "cold_start")
    assert [len(ex.profile) for ex in loaded] == [4] * 4 and loaded.task.name == "LaMP_3"
    assert (out / "train_questions.json").is_symlink() and len(load_split(out, "train")) == 6
    write_slice(tmp_path / "slices", "cold_start", "LaMP_3", sl, train_from=src)  # rewriting is fine


def test_topic_shift_holds_out_the_distinct_topic_users_whole():
    """12 users write about rock, 4 about hip-hop: the 4 are the shifted group with all their questions; the users
    fitted on are the other end, with a gap between; outputs never decide the split; bad input is refused."""
    import numpy as np
    import pytest

    from pplug.lamp.slices import topic_shift

    words = {"guitar": 0, "riff": 1, "rhyme": 2, "beat": 3}

    def embed(texts):  # a bag of topic words, unit rows
        out = np.zeros((len(texts), 4)) + 1e-3
        for i, t in enumerate(texts):
            for w in t.split():
                if w in words:
                    out[i, words[w]] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def user(u: str, topic: str, lean: float):  # lean: how far to the rock end, so users are ordered
        rock = ["guitar"] * int(1 + 4 * lean)
        text = " ".join(rock + ["riff"]) if topic == "rock" else "rhyme beat rhyme"
        train = [Example(f"{u}-t{k}", f"review: {text} {k}", [], "5" if topic == "rock" else "1", u) for k in range(3)]
        return train, [Example(f"{u}-d", f"review: {text} dev", [], "4", u)]

    train, dev = [], []
    for i in range(12):
        t, d = user(f"rock{i:02d}", "rock", i / 11)
        train += t
        dev += d
    for i in range(4):
        t, d = user(f"hiphop{i}", "hiphop", 0)
        train += t
        dev += d
    fit_train, fit_dev, shifted, note = topic_shift(train, dev, embed, query_text=lambda x: x.split("review: ")[1],
                                                    shifted_share=0.25, gap_share=0.25)
    assert {ex.user_id for ex in shifted} == {f"hiphop{i}" for i in range(4)}
    assert len(shifted) == 16  # every question of theirs, train and dev
    fitted = {ex.user_id for ex in fit_train}
    assert len(fitted) == 8 and not fitted & {ex.user_id for ex in shifted}
    assert fitted == {ex.user_id for ex in fit_dev} and all(ex in dev for ex in fit_dev)
    assert "4 shifted users" in note and "4 users between them left out" in note
    # the outputs do not move anyone: the same texts with other outputs give the same groups
    flipped = [Example(ex.id, ex.input, ex.profile, "3", ex.user_id) for ex in train]
    assert {ex.user_id for ex in topic_shift(flipped, dev, embed, query_text=lambda x: x.split("review: ")[1],
                                             shifted_share=0.25, gap_share=0.25)[2]} == {ex.user_id for ex in shifted}
    with pytest.raises(ValueError, match="user_id"):
        topic_shift([Example("q", "review: x", [], "5", None)], [], embed)
    with pytest.raises(ValueError, match="shifted_share"):
        topic_shift(train, dev, embed, shifted_share=0.8, gap_share=0.3)
