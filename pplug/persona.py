"""AI Persona documents: a textual user profile kept next to the PPlug user embedding.

Following AI Persona (Wang et al.), a user is described by six fields -- identity, demographics,
personality, memory, pattern and preference -- plus free `extensions`. A persona is a small YAML or
JSON document; `load_persona` validates it against the dataclass schema (a wrong type or an unknown key
outside `extensions` fails with one line naming the file and the field path), and `render` turns chosen
fields into a short, deterministic paragraph that is put in front of the prompt. `derive_from_history`
recomputes what a user's history can tell (activity, typical length, topics, output style, rating
distribution): the "fast adaptation" of the persona, no model involved.

    persona.yaml --load_persona--> Persona --render(fields)--> "User: Ana (...). Prefers ..."
    history items --derive_from_history--> {"pattern": {...}, "preference": {...}} --merge--> Persona

This module gathers the public names of three: `persona_schema` (the document, its files, diff and
merge), `persona_render` (the paragraph) and `persona_history` (the fields derived from history).
"""

from .persona_history import derive_from_history, history_persona_text, history_personas, top_topics
from .persona_render import DEFAULT_FIELDS, MAX_RENDER_CHARS, render
from .persona_schema import (
    SECTIONS,
    Demographics,
    Identity,
    Memory,
    Pattern,
    Persona,
    PersonaError,
    Personality,
    Preference,
    apply_updates,
    diff,
    dump_persona,
    load_persona,
    merge,
    parse_persona,
    save_persona,
)

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
    "MAX_RENDER_CHARS",
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
