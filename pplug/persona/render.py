"""Persona fields -> one short, deterministic paragraph put in front of the prompt (`render`)."""

from __future__ import annotations

import dataclasses
import json

from .schema import SECTIONS, Persona

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


__all__ = ["DEFAULT_FIELDS", "MAX_RENDER_CHARS", "render"]
