"""Persona documents: schema validation (errors name file + field), load/save, render, derive, diff."""

from __future__ import annotations

import json

import pytest

from pplug.persona.from_history import derive_from_history, top_topics
from pplug.persona.render import render
from pplug.persona.schema import Persona, PersonaError, apply_updates, diff, load_persona, parse_persona, save_persona

PERSONA_YAML = """\
identity: {name: Ana, type: reviewer}
demographics: {gender: female, age: 34, nationality: Portuguese, location: Lisbon}
personality: {mbti: INTJ, values: [honesty], interests: [sci-fi, jazz]}
pattern: {behaviour: [reviews on weekends]}
preference: {styles: [concise], formats: [bullet points]}
extensions: {favourite_color: teal, devices: [phone, laptop]}
"""


@pytest.fixture
def persona_file(tmp_path):
    path = tmp_path / "ana.yaml"
    path.write_text(PERSONA_YAML, encoding="utf-8")
    return path


def test_load_yaml_fields(persona_file):
    p = load_persona(persona_file)
    assert p.identity.name == "Ana"
    assert p.demographics.age == 34
    assert p.personality.interests == ["sci-fi", "jazz"]
    assert p.extensions == {"favourite_color": "teal", "devices": ["phone", "laptop"]}


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("demographics: {age: thirty}", "demographics.age", "expected an integer"),
        ("demographics: {age: true}", "demographics.age", "expected an integer"),
        ("identity: {nick: x}", "identity.nick", "unknown key"),
        ("hobbies: [chess]", "hobbies", "unknown key"),
        ("personality: {interests: [1, 2]}", "personality.interests[0]", "expected a string"),
        ("preference: {rating_distribution: {'5': high}}", "preference.rating_distribution.5", "expected a number"),
        ("identity: [Ana]", "identity", "expected a mapping"),
    ],
)
def test_validation_error_names_file_and_field(tmp_path, text, field, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PersonaError) as err:
        load_persona(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: field '{field}': ")
    assert problem in msg
    assert "\n" not in msg


def test_unknown_key_hint_points_at_extensions(tmp_path):
    with pytest.raises(PersonaError, match="put custom keys under 'extensions'"):
        parse_persona("zodiac: leo", source="p.yaml")


def test_extensions_accept_any_json_value():
    p = parse_persona("extensions: {a: {b: [1, 2.5, null, true]}, c: x}", source="p.yaml")
    assert p.extensions["a"] == {"b": [1, 2.5, None, True]}


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("identity: {name: [unclosed\n", encoding="utf-8")
    with pytest.raises(PersonaError) as err:
        load_persona(path)
    assert str(err.value).startswith(f"{path}: not valid")
    assert "\n" not in str(err.value)


def test_json_error_names_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"demographics": {"location": 5}}), encoding="utf-8")
    with pytest.raises(PersonaError, match=r"p\.json: field 'demographics\.location': expected a string"):
        load_persona(path)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, persona_file, suffix):
    p = load_persona(persona_file)
    out = save_persona(p, tmp_path / f"copy{suffix}")
    assert load_persona(out) == p
    if suffix == ".json":
        json.loads(out.read_text(encoding="utf-8"))  # really JSON
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_render_deterministic_and_selective(persona_file):
    p = load_persona(persona_file)
    full = render(p)
    assert full == render(load_persona(persona_file))
    assert full.startswith("User: Ana (reviewer).")
    assert "INTJ" in full and "Lisbon" in full and "teal" in full
    only = render(p, fields=["preference.styles", "personality"])
    assert only.startswith("Prefers: style concise.")
    assert "Personality:" in only
    assert "bullet points" not in only and "Lisbon" not in only
    assert render(p, fields="identity.name") == "User: Ana."
    assert render(Persona()) == ""


def test_render_is_bounded_by_whole_sentences(persona_file):
    p = load_persona(persona_file)
    p.personality.description = "x" * 1000
    text = render(p, max_chars=200)
    assert len(text) <= 200
    assert text.endswith(".")
    assert "x" * 50 not in text  # the long sentence was dropped, not cut mid-way


def test_render_unknown_field():
    with pytest.raises(ValueError, match="unknown persona field 'preference.colour'"):
        render(Persona(), fields=["preference.colour"])


RATINGS = [
    {"id": "1", "text": "Great sound quality and long battery life", "score": "5"},
    {"id": "2", "text": "The battery died after a week", "score": "2"},
    {"id": "3", "text": "Sound is fine, battery average", "score": "4"},
    {"id": "4", "text": "Excellent sound", "score": "5"},
]


def test_derive_ratings():
    d = derive_from_history(RATINGS, "LaMP_3")
    assert d["pattern"]["activity_count"] == 4
    assert d["pattern"]["topics"][:2] == ["battery", "sound"]
    dist = d["preference"]["rating_distribution"]
    assert dist == {"1": 0.0, "2": 0.25, "3": 0.0, "4": 0.25, "5": 0.5}
    assert d["preference"]["mean_rating"] == 4.0
    assert d["memory"]["short_term"][0].endswith('"Excellent sound"')  # newest first


def test_derive_generation_style_and_length():
    items = [
        {"id": str(i), "title": t, "abstract": "we study personalization of language models"}
        for i, t in enumerate(["Why Users Differ: A Study", "Personal Models: Do They Help?", "Learning User Styles"])
    ]
    d = derive_from_history(items, "LaMP_5")
    assert d["preference"]["output_length"] == "short"
    assert d["preference"]["typical_output_words"] == 5  # median of 5, 5, 3 words
    assert "title case" in d["preference"]["output_style"]
    assert "colon subtitles" in d["preference"]["output_style"]


def test_derive_classification_top_labels():
    items = [{"description": "a space film", "tag": t} for t in ["sci-fi", "comedy", "sci-fi"]]
    d = derive_from_history(items, "LaMP_2")
    assert d["preference"]["top_labels"] == ["sci-fi", "comedy"]


def test_derive_names_bad_item():
    with pytest.raises(ValueError, match="history item 1: .*'score'"):
        derive_from_history([RATINGS[0], {"id": "x", "text": "no score"}], "LaMP_3")


def test_derived_fields_never_overwrite_written_ones(persona_file):
    p = load_persona(persona_file)
    q = apply_updates(p, derive_from_history(RATINGS, "LaMP_3"))
    assert q.preference.styles == ["concise"]
    assert q.pattern.behaviour == ["reviews on weekends"]
    assert q.pattern.activity_count == 4
    assert "mean rating 4.0" in render(q)


def test_diff_ops():
    a = {"pattern": {"activity_count": 3, "topics": ["x"]}, "identity": {"name": "A"}}
    b = {"pattern": {"activity_count": 5, "topics": ["x"]}, "preference": {"mean_rating": 4.0}}
    ops = diff(a, b)
    assert {"op": "replace", "path": "/pattern/activity_count", "old": 3, "value": 5} in ops
    assert {"op": "add", "path": "/preference", "value": {"mean_rating": 4.0}} in ops
    assert {"op": "remove", "path": "/identity", "old": {"name": "A"}} in ops
    assert diff(a, a) == []


def test_top_topics_deterministic_ties():
    assert top_topics(["zebra apple", "apple zebra mango"], n=3) == ["apple", "zebra"]  # mango: once


def test_history_persona_text_feeds_the_training_prompts():
    """The persona ablation: a LaMP user's derived persona lands in the prompt after the soft prompt."""
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.persona.from_history import history_persona_text
    from pplug.train.data import Collator

    task = get_task("LaMP_3")
    harsh = [{"id": str(i), "text": f"Item {i} broke quickly.", "score": "1"} for i in range(6)]
    text = history_persona_text(harsh, task)
    assert "1: 100%" in text and len(text) <= 400
    assert history_persona_text([], task) == ""  # cold start: no persona sentence

    rows = [Example("a", task.make_input("Works fine."), harsh, "1"), Example("b", task.make_input("Works fine."), [], "5")]
    with_persona = Collator(task, "pplug", True, 512, None, None, with_targets=True, persona=True)(rows).batch
    without = Collator(task, "pplug", True, 512, None, None, with_targets=True)(rows).batch
    assert text in with_persona.prompts[0] and text not in without.prompts[0]
    assert with_persona.prompts[1] == without.prompts[1]  # nothing derived for a user with no history
