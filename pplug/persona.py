"""AI Persona documents: a textual user profile kept next to the PPlug user embedding.

Following AI Persona (Wang et al.), a user is described by six fields -- identity, demographics,
personality, memory, pattern and preference -- plus free `extensions`. A persona is a small YAML or
JSON document; `load_persona` validates it against the dataclass schema below (a wrong type or an
unknown key outside `extensions` fails with one line naming the file and the field path), and
`render` turns chosen fields into a short, deterministic paragraph that is put in front of the
prompt. `derive_from_history` recomputes what a user's history can tell (activity, typical length,
topics, output style, rating distribution): the "fast adaptation" of the persona, no model involved.

    persona.yaml --load_persona--> Persona --render(fields)--> "User: Ana (...). Prefers ..."
    history items --derive_from_history--> {"pattern": {...}, "preference": {...}} --merge--> Persona
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
import types
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .io import atomic_write_text


class PersonaError(ValueError):
    """An invalid persona document; the message is one line: "<file>: field '<path>': <problem>"."""


# --- schema -------------------------------------------------------------------------------------


@dataclass
class Identity:
    """Who the user is."""

    name: str | None = None
    """Display name."""
    user_id: str | None = None
    """Id of the user in the store (filled in by `UserStore.create_user` when missing)."""
    type: str | None = None
    """User type, e.g. "researcher", "reviewer", "free-tier"."""


@dataclass
class Demographics:
    """Demographic facts the user chose to share."""

    gender: str | None = None
    """Free text, e.g. "female"."""
    age: int | None = None
    """Age in years."""
    nationality: str | None = None
    """Nationality, e.g. "Portuguese"."""
    native_language: str | None = None
    """Native language, e.g. "Portuguese"."""
    location: str | None = None
    """Where the user lives, e.g. "Lisbon"."""


@dataclass
class Personality:
    """Personality traits."""

    mbti: str | None = None
    """MBTI type, e.g. "INTJ"."""
    values: list[str] = field(default_factory=list)
    """What the user cares about, e.g. ["honesty", "curiosity"]."""
    interests: list[str] = field(default_factory=list)
    """Interests, e.g. ["sci-fi", "jazz"]."""
    description: str | None = None
    """Any further free-text description of the personality."""


@dataclass
class Memory:
    """Interaction memory. Long-term memory is the store's per-user vector index; this names it."""

    long_term: str | None = None
    """Link to the long-term memory (vector index), e.g. "pplug-store:<user_id>" (set by the store)."""
    short_term: list[str] = field(default_factory=list)
    """Short snippets of the most recent interactions (derived from history)."""
    notes: list[str] = field(default_factory=list)
    """Frequently asked questions, feedback or reflections worth remembering."""


@dataclass
class Pattern:
    """Behaviour and engagement patterns (mostly derived from history)."""

    activity_count: int | None = None
    """Number of interactions recorded for the user."""
    typical_length: int | None = None
    """Median length of the user's history items, in words."""
    topics: list[str] = field(default_factory=list)
    """Most frequent topic keywords in the user's history."""
    behaviour: list[str] = field(default_factory=list)
    """Free-text behaviour / engagement patterns, e.g. "writes late at night"."""


@dataclass
class Preference:
    """Styles, content, formats and reasoning the user prefers."""

    styles: list[str] = field(default_factory=list)
    """Writing styles, e.g. ["concise", "title case"]."""
    content: list[str] = field(default_factory=list)
    """Preferred content, e.g. favourite tags or categories."""
    formats: list[str] = field(default_factory=list)
    """Preferred output formats, e.g. ["bullet points"]."""
    reasoning: list[str] = field(default_factory=list)
    """Preferred reasoning patterns, e.g. ["examples first"]."""
    models: list[str] = field(default_factory=list)
    """Preferred models or agents, where several are offered."""
    output_length: str | None = None
    """"short", "medium" or "long" (derived from the user's own outputs)."""
    typical_output_words: int | None = None
    """Median length, in words, of the user's own outputs (titles, tweets, ...)."""
    output_style: list[str] = field(default_factory=list)
    """Surface style of the user's own outputs, e.g. ["title case", "questions"] (derived from history)."""
    top_labels: list[str] = field(default_factory=list)
    """Labels the user chose most often (classification tasks; derived from history)."""
    rating_distribution: dict[str, float] = field(default_factory=dict)
    """Share of each rating the user gave, e.g. {"1": 0.1, ..., "5": 0.4} (rating tasks)."""
    mean_rating: float | None = None
    """Mean rating the user gave (rating tasks)."""


@dataclass
class Persona:
    """An AI Persona document. Unknown keys are rejected except under `extensions`."""

    identity: Identity = field(default_factory=Identity)
    """Identity: name, user id, type."""
    demographics: Demographics = field(default_factory=Demographics)
    """Demographics: gender, age, nationality, native language, location."""
    personality: Personality = field(default_factory=Personality)
    """Personality: MBTI, values, interests."""
    memory: Memory = field(default_factory=Memory)
    """Memory: long-term (vector index link) and short-term (recent interactions)."""
    pattern: Pattern = field(default_factory=Pattern)
    """Behaviour and engagement patterns."""
    preference: Preference = field(default_factory=Preference)
    """Preferred styles, content, formats, reasoning, models; rating distribution."""
    extensions: dict[str, Any] = field(default_factory=dict)
    """User-defined keys (any JSON-compatible values); rendered as "key: value"."""

    def to_dict(self, compact: bool = True) -> dict[str, Any]:
        """Plain JSON-compatible dict. `compact` drops empty values (None, [], {}) for short documents."""
        d = dataclasses.asdict(self)
        return _compact(d) if compact else d

    @classmethod
    def from_dict(cls, data: Any, source: str = "<persona>") -> Persona:
        """Validate and build a persona; `source` (usually the file name) prefixes error messages."""
        if data is None:
            data = {}
        return _build(cls, data, source, "")

    def copy(self) -> Persona:
        """Deep copy."""
        return Persona.from_dict(self.to_dict(compact=False))


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Persona))
"""Top-level persona fields, in document order."""


def _compact(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {k: _compact(v) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(obj, list):
        return [_compact(v) for v in obj]
    return obj


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is Any:
        return "any value"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _fail(source: str, path: str, problem: str) -> PersonaError:
    return PersonaError(f"{source}: field '{path}': {problem}")


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"got {type(value).__name__} {text}"


def _check(tp: Any, value: Any, source: str, path: str) -> Any:
    """Check `value` against the annotation `tp`; returns the (converted) value or raises PersonaError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        for a in args:
            try:
                return _check(a, value, source, path)
            except PersonaError:
                continue
        raise _fail(source, path, f"expected {_describe(tp)}, {_got(value)}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, path)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            return [value]  # a single string where a list is expected: accept it as a one-item list
        if not isinstance(value, list):
            raise _fail(source, path, f"expected {_describe(tp)}, {_got(value)}")
        return [_check(item_tp, v, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _fail(source, path, f"expected a mapping, {_got(value)}")
        return {str(k): _check(val_tp, v, source, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise _fail(source, path, f"value is not JSON-compatible, {_got(value)}") from None
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise _fail(source, path, f"expected {_describe(tp)}, {_got(value)}")


def _build(cls: type, data: Any, source: str, path: str) -> Any:
    where = path or "<root>"
    if not isinstance(data, dict):
        raise _fail(source, where, f"expected a mapping, {_got(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in hints:
            hint = "; put custom keys under 'extensions'" if path != "extensions" else ""
            raise _fail(source, sub, f"unknown key (known: {', '.join(known)}){hint}")
        kwargs[key] = _check(hints[key], value, source, sub)
    return cls(**kwargs)


# --- load / save ---------------------------------------------------------------------------------


def parse_persona(text: str, source: str = "<persona>", fmt: str | None = None) -> Persona:
    """Parse YAML or JSON text (YAML is a superset of JSON) into a validated Persona."""
    import yaml

    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PersonaError(f"{source}: not valid {'JSON' if fmt == 'json' else 'YAML/JSON'} ({first})") from None
    return Persona.from_dict(data, source=source)


def load_persona(path: str | Path) -> Persona:
    """Load a persona from a `.yaml`/`.yml`/`.json` file; errors name the file and the field path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: persona file not found") from None
    return parse_persona(text, source=str(path), fmt="json" if path.suffix.lower() == ".json" else None)


def dump_persona(persona: Persona, fmt: str = "yaml") -> str:
    """Persona as YAML (default, keys in schema order) or JSON text (compact: empty fields dropped)."""
    d = persona.to_dict()
    if fmt == "json":
        return json.dumps(d, indent=2, ensure_ascii=False) + "\n"
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True, default_flow_style=False)


def save_persona(persona: Persona, path: str | Path) -> Path:
    """Write atomically; JSON when the suffix is `.json`, YAML otherwise."""
    path = Path(path)
    return atomic_write_text(path, dump_persona(persona, "json" if path.suffix.lower() == ".json" else "yaml"))


# --- diff / merge ----------------------------------------------------------------------------------


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """JSON diff of two plain documents: a list of {"op": add|remove|replace, "path": "/a/b", ...}.

    Paths are JSON-pointer style (RFC 6902); "replace" and "remove" carry the old value too so a
    change log can be read (and undone) without the previous version at hand. Lists are compared
    as whole values (persona lists are short)."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for k in sorted(set(old) | set(new), key=str):
            p = f"{path}/{_escape(k)}"
            if k not in new:
                ops.append({"op": "remove", "path": p, "old": old[k]})
            elif k not in old:
                ops.append({"op": "add", "path": p, "value": new[k]})
            else:
                ops.extend(diff(old[k], new[k], p))
        return ops
    if old == new and type(old) is type(new):
        return []
    return [{"op": "replace", "path": path or "/", "old": old, "value": new}]


def _escape(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge key by key, anything else in `updates` replaces."""
    out = dict(base)
    for k, v in updates.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "rating_distribution":
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_updates(persona: Persona, updates: dict[str, Any], source: str = "<updates>") -> Persona:
    """A new Persona with `updates` (a partial nested dict, e.g. from `derive_from_history`) merged in."""
    return Persona.from_dict(merge(persona.to_dict(compact=False), updates), source=source)


# --- rendering ------------------------------------------------------------------------------------

DEFAULT_FIELDS: tuple[str, ...] = ("identity", "demographics", "personality", "pattern", "preference", "extensions")
"""Fields `render` uses by default (short-term memory is left out: the embedding already reads history)."""

MAX_RENDER_CHARS = 600
"""Default bound on the rendered paragraph (about 150 LLM tokens)."""


def _join(items: list[str], limit: int = 5) -> str:
    return ", ".join(str(x) for x in items[:limit])


def _sentences(p: Persona, section: str, keys: set[str] | None) -> list[str]:
    """Sentences for one section; `keys` restricts to sub-fields (None = all)."""

    def want(k: str) -> bool:
        return keys is None or k in keys

    out: list[str] = []
    if section == "identity":
        i = p.identity
        bits = [f"id {i.user_id}" if i.user_id and want("user_id") else "", i.type if i.type and want("type") else ""]
        bits = [b for b in bits if b]
        name = i.name if i.name and want("name") else ""
        if name or bits:
            out.append(f"User: {name or 'anonymous'}" + (f" ({', '.join(bits)})" if bits else "") + ".")
    elif section == "demographics":
        d = p.demographics
        bits = [
            d.gender if d.gender and want("gender") else "",
            f"{d.age} years old" if d.age is not None and want("age") else "",
            d.nationality if d.nationality and want("nationality") else "",
            f"native language {d.native_language}" if d.native_language and want("native_language") else "",
            f"lives in {d.location}" if d.location and want("location") else "",
        ]
        bits = [b for b in bits if b]
        if bits:
            out.append("Demographics: " + ", ".join(bits) + ".")
    elif section == "personality":
        q = p.personality
        bits = [
            f"MBTI {q.mbti}" if q.mbti and want("mbti") else "",
            f"values {_join(q.values)}" if q.values and want("values") else "",
            f"interests {_join(q.interests)}" if q.interests and want("interests") else "",
            q.description if q.description and want("description") else "",
        ]
        bits = [b for b in bits if b]
        if bits:
            out.append("Personality: " + "; ".join(bits) + ".")
    elif section == "memory":
        m = p.memory
        if m.notes and want("notes"):
            out.append("Notes: " + "; ".join(m.notes[:3]) + ".")
        if m.short_term and want("short_term"):
            out.append("Recently: " + "; ".join(m.short_term[:3]) + ".")
    elif section == "pattern":
        t = p.pattern
        bits = [
            f"{t.activity_count} past interactions" if t.activity_count is not None and want("activity_count") else "",
            f"typically {t.typical_length} words" if t.typical_length is not None and want("typical_length") else "",
            f"frequent topics: {_join(t.topics)}" if t.topics and want("topics") else "",
            _join(t.behaviour, 3) if t.behaviour and want("behaviour") else "",
        ]
        bits = [b for b in bits if b]
        if bits:
            out.append("Pattern: " + "; ".join(bits) + ".")
    elif section == "preference":
        r = p.preference
        bits = [
            f"style {_join(r.styles)}" if r.styles and want("styles") else "",
            f"content {_join(r.content)}" if r.content and want("content") else "",
            f"formats {_join(r.formats)}" if r.formats and want("formats") else "",
            f"reasoning {_join(r.reasoning)}" if r.reasoning and want("reasoning") else "",
            f"models {_join(r.models)}" if r.models and want("models") else "",
            f"output style {_join(r.output_style)}" if r.output_style and want("output_style") else "",
            f"often {_join(r.top_labels, 3)}" if r.top_labels and want("top_labels") else "",
            f"{r.output_length} outputs" if r.output_length and want("output_length") else "",
            f"about {r.typical_output_words} words per output"
            if r.typical_output_words is not None and want("typical_output_words")
            else "",
            "ratings " + ", ".join(f"{k}: {v:.0%}" for k, v in sorted(r.rating_distribution.items()) if v > 0)
            if r.rating_distribution and want("rating_distribution")
            else "",
            f"mean rating {r.mean_rating:.1f}" if r.mean_rating is not None and want("mean_rating") else "",
        ]
        bits = [b for b in bits if b]
        if bits:
            out.append("Prefers: " + "; ".join(bits) + ".")
    elif section == "extensions":
        for k in sorted(p.extensions):
            if not want(k):
                continue
            v = p.extensions[k]
            if isinstance(v, list):
                v = _join([json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else x for x in v])
            elif isinstance(v, dict):
                v = json.dumps(v, sort_keys=True, ensure_ascii=False)
            if v not in (None, "", []):
                out.append(f"{str(k).replace('_', ' ').capitalize()}: {v}.")
    return out


def render(
    persona: Persona,
    fields: list[str] | tuple[str, ...] | str | None = None,
    max_chars: int = MAX_RENDER_CHARS,
) -> str:
    """Render chosen persona fields into one short paragraph for the prompt.

    Deterministic (same persona and fields -> same text) and bounded: whole sentences are kept in
    field order until `max_chars` would be exceeded; the rest is dropped.

    Args:
        persona: the persona to render.
        fields: section names ("preference") or dotted sub-fields ("preference.styles"), in the
            order to render; a comma-separated string is accepted. None = `DEFAULT_FIELDS`.
        max_chars: upper bound on the returned text's length.

    Returns:
        The paragraph, "" when nothing selected is filled in.
    """
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    fields = list(DEFAULT_FIELDS if fields is None else fields)
    order: list[str] = []
    keys: dict[str, set[str] | None] = {}
    for f in fields:
        section, _, sub = f.partition(".")
        if section not in SECTIONS:
            raise ValueError(f"render: unknown persona field '{f}' (known: {', '.join(SECTIONS)})")
        if section != "extensions" and sub:
            known = {x.name for x in dataclasses.fields(getattr(Persona(), section))}
            if sub not in known:
                raise ValueError(f"render: unknown persona field '{f}' (known: {', '.join(sorted(known))})")
        if section not in keys:
            order.append(section)
            keys[section] = set() if sub else None
        if sub and keys[section] is not None:
            keys[section].add(sub)
        elif not sub:
            keys[section] = None
    text = ""
    for section in order:
        for s in _sentences(persona, section, keys[section]):
            cand = f"{text} {s}" if text else s
            if len(cand) > max_chars:
                return text
            text = cand
    return text


# --- derived fields ---------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would every you your yours yourself yourselves one two get got
    like really even much many well way make made still back us new first last said says use used using based
    paper article review movie film book score title text abstract following http https www com""".split()
)

_WORD = re.compile(r"[a-z][a-z'\-]{2,}")


def _words(text: str) -> list[str]:
    return text.split()


def top_topics(texts: list[str], n: int = 5) -> list[str]:
    """The `n` most frequent non-stopword keywords seen at least twice (ties broken alphabetically)."""
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(w.strip("'-") for w in _WORD.findall(t.lower()) if w.strip("'-") not in _STOPWORDS)
    counts.pop("", None)
    min_count = 2 if len(texts) > 1 else 1  # a word seen once says nothing about a user's topics
    ranked = sorted(((w, c) for w, c in counts.items() if c >= min_count), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, _ in ranked[:n]]


def _length_bucket(words: float) -> str:
    return "short" if words <= 12 else ("medium" if words <= 60 else "long")


def _styles(outputs: list[str]) -> list[str]:
    """Simple surface-style descriptors of the user's own outputs (a share above half counts)."""
    outputs = [o for o in outputs if o.strip()]
    if not outputs:
        return []
    n = len(outputs)

    def share(pred) -> float:
        return sum(1 for o in outputs if pred(o)) / n

    def title_case(o: str) -> bool:
        ws = [w for w in o.split() if w[:1].isalpha() and len(w) > 3]
        return bool(ws) and all(w[0].isupper() for w in ws)

    styles = []
    if share(title_case) > 0.5:
        styles.append("title case")
    elif share(lambda o: o == o.lower()) > 0.5:
        styles.append("lowercase")
    if share(lambda o: "?" in o) > 0.3:
        styles.append("questions")
    if share(lambda o: "!" in o) > 0.3:
        styles.append("exclamations")
    if share(lambda o: ":" in o) > 0.3:
        styles.append("colon subtitles")
    if share(lambda o: bool(re.search(r"[#@]\w", o))) > 0.3:
        styles.append("hashtags/mentions")
    return styles


def derive_from_history(items: list[dict], task: Any, short_term: int = 3) -> dict[str, Any]:
    """Persona fields recomputed from a user's history items (LaMP profile items of `task`).

    Returns a partial persona dict (merge it with `apply_updates`):
    pattern.activity_count / typical_length (median words of the history text) / topics (keyword
    counts); preference.output_length / typical_output_words / styles from the user's own outputs
    (titles, tweets, ...); for rating tasks preference.rating_distribution and mean_rating; for
    classification tasks preference.content = the most frequent labels; memory.short_term = the last
    `short_term` items, shortened.

    Args:
        items: profile items, oldest first (as stored).
        task: a LaMP task name or `pplug.tasks.TaskSpec`.
        short_term: how many recent items to keep as short-term memory.
    """
    from .tasks import OutputKind, get_task

    spec = get_task(task) if isinstance(task, str) else task
    texts = []
    for i, item in enumerate(items):
        try:
            texts.append(spec.history_text(item))
        except ValueError as e:
            raise ValueError(f"history item {i}: {e}") from None
    pattern: dict[str, Any] = {"activity_count": len(items)}
    preference: dict[str, Any] = {}
    if items:
        pattern["typical_length"] = int(statistics.median(len(_words(t)) for t in texts))
        pattern["topics"] = top_topics(texts)
    out_field = spec.output_field
    outputs = [str(it.get(out_field, "")) for it in items] if out_field else []
    kind = spec.output_kind
    if outputs and kind == OutputKind.RATING:
        labels = list(spec.labels) or sorted(set(outputs))
        counts = Counter(o.strip() for o in outputs)
        total = sum(counts[label] for label in labels)
        if total:
            preference["rating_distribution"] = {label: round(counts[label] / total, 3) for label in labels}
            preference["mean_rating"] = round(
                sum(float(label) * counts[label] for label in labels if _is_number(label)) / total, 2
            )
    elif outputs and kind == OutputKind.CLASSIFICATION:
        counts = Counter(o.strip() for o in outputs if o.strip())
        preference["top_labels"] = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
    elif outputs and kind == OutputKind.GENERATION:
        words = int(statistics.median(len(_words(o)) for o in outputs))
        preference["typical_output_words"] = words
        preference["output_length"] = _length_bucket(words)
        preference["output_style"] = _styles(outputs)
    memory = {"short_term": [_snippet(t) for t in texts[-short_term:]][::-1]} if short_term and texts else {}
    out: dict[str, Any] = {"pattern": pattern, "preference": preference}
    if memory:
        out["memory"] = memory
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _snippet(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def history_persona_text(profile: list[dict], task: Any, max_chars: int = 400) -> str:
    """The persona a LaMP user's history alone tells (pattern, preference, short-term memory), rendered.

    Used by the persona ablation of `train.py --data.persona true` and `pplug evaluate --persona`: LaMP users
    come with no persona document, so the fields that history can tell are derived and written into the
    prompt after the soft prompt ([I; P_u; persona text; x]). Cold-start users get an empty string.
    """
    if not profile:
        return ""
    persona = apply_updates(Persona(), derive_from_history(list(profile), task), source="<derived from history>")
    return render(persona, max_chars=max_chars)


def history_personas(task: Any, examples: list, max_history: int | None = None) -> list[str]:
    """`history_persona_text` of each example's most recent `max_history` profile items (None: all)."""
    return [history_persona_text(ex.profile[-max_history:] if max_history else ex.profile, task) for ex in examples]


__all__ = [
    "Persona",
    "Identity",
    "Demographics",
    "Personality",
    "Memory",
    "Pattern",
    "Preference",
    "PersonaError",
    "SECTIONS",
    "DEFAULT_FIELDS",
    "load_persona",
    "parse_persona",
    "save_persona",
    "dump_persona",
    "render",
    "diff",
    "merge",
    "apply_updates",
    "derive_from_history",
    "top_topics",
    "history_persona_text",
    "history_personas",
]
