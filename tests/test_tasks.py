"""TaskSpec declarations: name normalisation, history / retrieval texts and query extraction."""

from __future__ import annotations

import pytest

from pplug.core.tasks import MOVIE_TAGS, TASKS, OutputKind, TaskSpec, get_task

ALL = ("LaMP_1", "LaMP_2", "LaMP_2N", "LaMP_3", "LaMP_4", "LaMP_5", "LaMP_6", "LaMP_7")


def test_all_tasks_declared():
    assert tuple(TASKS) == ALL
    for name, spec in TASKS.items():
        assert spec.name == name
        assert spec.main_metric in spec.metrics


@pytest.mark.parametrize("alias", ["LaMP_3", "LaMP-3", "lamp3", "lamp_3", " LAMP 3 ", "ratings"])
def test_get_task_aliases(alias):
    assert get_task(alias).name == "LaMP_3"


def test_get_task_variants_and_passthrough():
    assert get_task("lamp2n").name == "LaMP_2N"
    assert get_task("LaMP-2").name == "LaMP_2"
    spec = get_task("LaMP_7")
    assert get_task(spec) is spec


def test_unknown_task_lists_known():
    with pytest.raises(ValueError) as e:
        get_task("LaMP_9")
    msg = str(e.value)
    assert "LaMP_9" in msg and all(name in msg for name in ALL)


def test_labels_metrics_kinds():
    assert get_task("LaMP_1").labels == ("[1]", "[2]")
    assert get_task("LaMP_2").labels == MOVIE_TAGS and len(MOVIE_TAGS) == 15
    assert len(get_task("LaMP_2N").labels) == 15 and "food & drink" in get_task("LaMP_2N").labels
    t3 = get_task("LaMP_3")
    assert t3.labels == ("1", "2", "3", "4", "5") and t3.metrics == ("mae", "rmse")
    assert t3.output_kind is OutputKind.RATING and not t3.higher_is_better and t3.max_new_tokens == 10
    for n in ("LaMP_4", "LaMP_5", "LaMP_6", "LaMP_7"):
        assert get_task(n).metrics == ("rouge1", "rougeL") and get_task(n).labels == ()
        assert get_task(n).is_generation
    assert get_task("LaMP_2N").profile_fields == ("text", "title", "category")


def test_history_text_follows_pplug():
    assert get_task("LaMP_1").history_text({"id": 1, "title": "T", "abstract": "A"}) == "T A"
    assert get_task("LaMP_2").history_text({"id": "1", "description": "D", "tag": "comedy"}) == "D"
    assert get_task("LaMP_3").history_text({"id": "1", "text": "ok", "score": "4"}) == '4 is the score for "ok"'
    assert get_task("LaMP_3").history_text({"id": "1", "text": "ok", "score": 4}) == '4 is the score for "ok"'
    assert get_task("LaMP_4").history_text({"id": "1", "text": "body", "title": "head"}) == "body head"
    assert get_task("LaMP_5").history_text({"id": "1", "title": "T", "abstract": "A", "date": "2001"}) == "T A"
    assert get_task("LaMP_7").history_text({"id": "1", "text": "tw"}) == "tw"


def test_history_text_missing_field_names_item_and_field():
    with pytest.raises(ValueError, match=r"item 7: field 'score'"):
        get_task("LaMP_3").history_text({"id": "7", "text": "ok"})


def test_retrieval_text():
    assert get_task("LaMP_2").retrieval_text({"description": "D", "tag": "comedy"}) == (
        'the tag for the movie: "D" is "comedy"'
    )
    assert get_task("LaMP_4").retrieval_text({"text": "B", "title": "H"}) == '"H" is the title for "B"'


@pytest.mark.parametrize(
    "task, inp, expected",
    [
        (
            "LaMP_1",
            'For an author who has written the paper with the title "Deep Nets, Shallow Data", which reference is '
            'related? Just answer with [1] or [2] without explanation. [1]: "A" [2]: "B"',
            "Deep Nets, Shallow Data",
        ),
        ("LaMP_2", get_task("LaMP_2").make_input("A spy story."), "A spy story."),
        ("LaMP_2N", get_task("LaMP_2N").make_input("Markets fell."), "Markets fell."),
        (
            "LaMP_3",
            "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
            "without further explanation. review: Great album. Another review: meh",
            "Great album. Another review: meh",
        ),
        ("LaMP_4", "Generate a headline for the following article:  Rain today.  ", "Rain today."),
        ("LaMP_5", "Generate a title for the following abstract of a paper: We study paper: x.", "We study paper: x."),
        ("LaMP_6", "Generate a subject for the following email: Rob, see attached.", "Rob, see attached."),
        (
            "LaMP_7",
            "Paraphrase the following tweet without any explanation before or after it: so tired: monday",
            "so tired: monday",
        ),
        ("LaMP_4", "no marker at all ", "no marker at all"),
    ],
)
def test_query_text(task, inp, expected):
    assert get_task(task).query_text(inp) == expected


def test_make_input_roundtrip():
    for spec in TASKS.values():
        if spec.name == "LaMP_1":
            continue
        assert spec.query_text(spec.make_input("some content here")) == "some content here"


def test_spec_validates_templates():
    with pytest.raises(ValueError, match="not in profile_fields"):
        TaskSpec(
            name="X", description="", profile_fields=("text",), history_template="{title}", query_markers=(),
            output_kind=OutputKind.GENERATION, labels=(), metrics=("rouge1",), main_metric="rouge1",
            higher_is_better=True, max_new_tokens=8, retrieval_template="{text}",
        )  # fmt: skip


def test_history_stats_rating_shares_lengths_and_cold_start():
    rating = get_task("LaMP_3")
    items = [{"text": "a", "score": "5"}, {"text": "b", "score": 4.0}, {"text": "c", "score": "n/a"}]
    stats = rating.history_stats(items)
    assert len(stats) == rating.stats_dim == 6
    assert stats[:5] == [0.0, 0.0, 0.0, 0.5, 0.5]  # an unknown score counts in the size only
    assert stats[5] > 0 and rating.history_stats([]) == [0.0] * 6
    titles = get_task("LaMP_5")
    short, long_ = (titles.history_stats([{"title": t, "abstract": "x"}]) for t in ("Two words", "A " * 20))
    assert len(short) == titles.stats_dim == 3 and short[0] < long_[0] and short[1] == 0.0
    for name in ("LaMP_1", "LaMP_2", "LaMP_4", "LaMP_6", "LaMP_7"):
        task = get_task(name)
        assert len(task.history_stats([])) == task.stats_dim


def test_validation_scores_every_rating_decoding_but_only_the_main_one_otherwise():
    from pplug.decode.inference import task_decodings

    assert task_decodings(get_task("LaMP_3"), "median") == ["median", "argmax", "expected"]
    assert task_decodings(get_task("LaMP_2"), "argmax") == ["argmax"]
    # generation: beam / MBR / preference cost several greedy passes; validation runs greedy only
    assert task_decodings(get_task("LaMP_6"), "argmax") == ["argmax"]
    assert task_decodings(get_task("LaMP_5"), "beam") == ["beam"]
