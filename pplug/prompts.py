"""The final LLM prompt text of one example, for every method: one function used everywhere.

Training, validation, `pplug evaluate` and `pplug generate` all build prompts here, so a model is always
evaluated on exactly the text it was trained on. A prompt is, in order:

    [persona text]  [retrieved history items, LaMP style]  input  [answer cue]

- Retrieved items are written with `task.retrieval_template` and joined LaMP style
  (`'<item>, and <item>. <input>'`, as in the LaMP paper's per-profile prompts); each item's text
  fields are cut to `max_item_words` words so one long item cannot eat the whole input budget.
- The persona (a rendered text, see pplug.persona) goes first, on its own line.
- Causal LMs get a short answer cue ("Score:", "Title:", ...) after the input, so the target is the
  natural continuation; seq2seq models read the input as is (their decoder starts the answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Answer cue per LaMP task for causal LMs (what the target continues); other tasks use the kind's default.
_CUES_BY_TASK = {
    "LaMP_1": "Answer:",
    "LaMP_2": "Tag:",
    "LaMP_2N": "Category:",
    "LaMP_3": "Score:",
    "LaMP_4": "Headline:",
    "LaMP_5": "Title:",
    "LaMP_6": "Subject:",
    "LaMP_7": "Paraphrase:",
}
_CUES_BY_KIND = {"classification": "Answer:", "rating": "Score:", "generation": "Answer:"}

DEFAULT_MAX_ITEM_WORDS = 48
"""Words kept per retrieved item (LaMP cuts items to fit its input budget; a word cap is tokenizer-free)."""


def answer_cue(task: Any) -> str:
    """The short cue appended after the input for causal LMs (e.g. "Score:" for LaMP_3)."""
    name = getattr(task, "name", str(task))
    if name in _CUES_BY_TASK:
        return _CUES_BY_TASK[name]
    kind = getattr(getattr(task, "output_kind", None), "value", "generation")
    return _CUES_BY_KIND.get(kind, "Answer:")


def _cut_words(text: str, max_words: int | None) -> str:
    words = text.split()
    if max_words is None or len(words) <= max_words:
        return " ".join(words)
    return " ".join(words[:max_words]) + " ..."


def retrieved_text(task: Any, items: Sequence[dict], max_item_words: int | None = DEFAULT_MAX_ITEM_WORDS) -> str:
    """Retrieved history items written LaMP style: `'<item 1>, and <item 2>'` (empty string for no items).

    Each text field of an item is cut to `max_item_words` words, then the item is formatted with
    `task.retrieval_text` (so the template's own words and closing quotes survive).
    """
    parts = []
    for item in items:
        cut = {k: _cut_words(v, max_item_words) if isinstance(v, str) and k != "id" else v for k, v in item.items()}
        parts.append(task.retrieval_text(cut))
    return ", and ".join(p for p in parts if p)


def compose_prompt(
    task: Any,
    input: str,
    retrieved: Sequence[dict] = (),
    persona: str | None = None,
    causal: bool = True,
    max_item_words: int | None = DEFAULT_MAX_ITEM_WORDS,
) -> str:
    """Compose the final prompt text of one example.

    Args:
        task: the TaskSpec (its `retrieval_text` writes retrieved items; its name picks the answer cue).
        input: the example's LaMP input (instruction + content), unchanged.
        retrieved: history items to put before the input, most relevant first ([] for no retrieval).
        persona: optional persona text (already rendered), put first on its own line.
        causal: True for decoder-only LLMs: append "\\n<cue>" so the target is the continuation.
        max_item_words: words kept per retrieved item (None keeps all).

    Returns:
        The prompt string, e.g. for LaMP_3 with one retrieved item and a causal LM:
        `'5 is the score for "great album", and ... . What is the score ... review: ...\\nScore:'`.
    """
    text = input.strip()
    context = retrieved_text(task, retrieved, max_item_words) if retrieved else ""
    if context:
        text = f"{context}. {text}"
    if persona and persona.strip():
        text = f"{persona.strip()}\n{text}"
    if causal:
        text = f"{text}\n{answer_cue(task)}"
    return text


__all__ = ["answer_cue", "compose_prompt", "retrieved_text", "DEFAULT_MAX_ITEM_WORDS"]
