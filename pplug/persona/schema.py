"""The AI Persona document: its schema, validation, YAML/JSON files, and JSON diff / merge.

Following AI Persona (Wang et al.), a user is described by six fields -- identity, demographics,
personality, memory, pattern and preference -- plus free `extensions`. A persona is a small YAML or
JSON document; `load_persona` validates it against the dataclass schema below (a wrong type or an
unknown key outside `extensions` fails with one line naming the file and the field path).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from pplug.core.io import atomic_write_text

MAX_PERSONA_CHARS = 32_000
"""Characters of a persona document's JSON (a persona is a short profile; its text goes in front of prompts)."""
MAX_PERSONA_TEXT_CHARS = 4_000
"""Characters of one string inside a persona (a name, a description, a list entry, an extension value)."""
MAX_PERSONA_DEPTH = 8
"""Nesting levels of the values under `extensions`."""


class PersonaError(ValueError):
    """An invalid persona document; the message is one line: "<file>: field '<path>': <problem>".

    `field` is the field path ("extensions.x", "personality.interests[2]"; None for the document as a whole).
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


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
        persona = _build(cls, data, source, "")
        size = len(json.dumps(persona.to_dict(), ensure_ascii=False))
        if size > MAX_PERSONA_CHARS:
            raise PersonaError(f"{source}: {size} characters of JSON, over the limit of {MAX_PERSONA_CHARS}")
        return persona

    def copy(self) -> Persona:
        """Deep copy."""
        return Persona.from_dict(self.to_dict(compact=False))

    def validated(self, source: str = "<persona>") -> Persona:
        """A checked deep copy: a Persona built or edited in code has not been through `from_dict`'s rules."""
        return Persona.from_dict(self.to_dict(compact=False), source=source)


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
    return PersonaError(f"{source}: field '{path}': {problem}", path)


def _check_text(value: str, source: str, path: str) -> str:
    """What every database and JSON reply can hold: no NUL, no unpaired surrogate, bounded length."""
    if "\x00" in value:
        raise _fail(source, path, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in JSON): no UTF-8 for it
        raise _fail(source, path, "not valid Unicode (an unpaired surrogate)") from None
    if len(value) > MAX_PERSONA_TEXT_CHARS:
        raise _fail(source, path, f"{len(value)} characters, over the limit of {MAX_PERSONA_TEXT_CHARS}")
    return value


def _check_json_value(value: Any, source: str, path: str, depth: int = 0) -> Any:
    """An `extensions` value: JSON as every JSON parser reads it (finite numbers, valid text, bounded nesting)."""
    if depth > MAX_PERSONA_DEPTH:
        raise _fail(source, path, f"nested deeper than {MAX_PERSONA_DEPTH} levels")
    if isinstance(value, str):
        return _check_text(value, source, path)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(source, path, f"{value} is not a JSON number (finite numbers only)")
        return value
    if isinstance(value, list):
        return [_check_json_value(v, source, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(source, path, f"key {k!r} is not a string")
            _check_text(k, source, f"{path}.<key>")
            out[k] = _check_json_value(v, source, f"{path}.{k}", depth + 1)
        return out
    raise _fail(source, path, f"value is not JSON-compatible, {_got(value)}")


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
        if len(args) == 1:  # Optional[X]: X's own message ("not valid Unicode"), not "expected X"
            return _check(args[0], value, source, path)
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
        return {_check_text(str(k), source, f"{path}.<key>"): _check(val_tp, v, source, f"{path}.{k}")
                for k, v in value.items()}
    if tp is Any:
        return _check_json_value(value, source, path)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _fail(source, path, f"{value} is not a finite number")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return _check_text(value, source, path)
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


__all__ = [
    "Persona",
    "Identity",
    "Demographics",
    "Personality",
    "Memory",
    "Pattern",
    "Preference",
    "PersonaError",
    "MAX_PERSONA_CHARS",
    "MAX_PERSONA_DEPTH",
    "MAX_PERSONA_TEXT_CHARS",
    "SECTIONS",
    "load_persona",
    "parse_persona",
    "save_persona",
    "dump_persona",
    "diff",
    "merge",
    "apply_updates",
]
