"""Persona fields a user's history tells (activity, typical length, topics, output style, rating
distribution): the "fast adaptation" of the persona, recomputed with no model involved."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

from .render import render
from .schema import Persona, apply_updates

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
        # a "word" of over 40 letters is no topic (and would swell the persona past its size limit)
        counts.update(w.strip("'-") for w in _WORD.findall(t.lower()) if w.strip("'-") not in _STOPWORDS
                      and len(w) <= 40)
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
        task: a LaMP task name or `pplug.core.tasks.TaskSpec`.
        short_term: how many recent items to keep as short-term memory.
    """
    from pplug.core.tasks import OutputKind, get_task

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


__all__ = ["derive_from_history", "history_persona_text", "history_personas", "top_topics"]
