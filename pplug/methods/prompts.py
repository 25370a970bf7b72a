"""The final LLM prompt text of one example, for every method: one function used everywhere.

Training, validation, `pplug evaluate` and `pplug generate` all build prompts here, so a model is always
evaluated on exactly the text it was trained on. A prompt is, in order:

    [persona text]  [retrieved history items, LaMP style]  input  [answer cue]

- Retrieved items are written with `task.retrieval_template` and joined LaMP style
  (`'<item>, and <item>. <input>'`, as in the LaMP paper's per-profile prompts); each item's text
  fields are cut to `max_item_words` words so one long item cannot eat the whole input budget.
- With a `PromptBudget` (the LLM's tokenizer and input limit), retrieved items get the tokens the rest
  of the prompt leaves, but at least `min_context_share` of the limit (most relevant first, cut at the
  end); the LLM then cuts the prompt's middle, i.e. the middle of the input, keeping the retrieved text,
  the task instruction (the input's start) and the answer cue. Why both rules: without a cap, two
  retrieved emails or abstracts pushed the instruction and most of the input out of a 128-token prompt;
  with only the leftover, a 300-token review left no room at all and retrieval silently became no
  retrieval.
- The persona (a rendered text, see pplug.persona) goes first, on its own line.
- Causal LMs get a short answer cue ("Score:", "Title:", ...) after the input, so the target is the
  natural continuation; seq2seq models read the input as is (their decoder starts the answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_ITEM_WORDS = 48
"""Words kept per retrieved item (LaMP cuts items to fit its input budget; a word cap is tokenizer-free)."""

MIN_CONTEXT_TOKENS = 16
"""Retrieved text is dropped when fewer tokens than this are left for it (a fragment would only confuse)."""


@dataclass(frozen=True)
class PromptBudget:
    """An LLM's prompt budget in tokens, used to fit retrieved items (`FrozenLLM.prompt_budget()` makes one)."""

    tokenizer: Any
    """The LLM's tokenizer (a Hugging Face tokenizer)."""
    max_tokens: int
    """Prompt tokens the LLM keeps (its `max_input_tokens`, less the EOS a seq2seq encoder input ends with)."""
    min_context_share: float = 0.4
    """Share of `max_tokens` retrieved text may always use, however long the input (the input's middle is
    cut instead). 0.4 keeps the retrieved text and a ~35-token instruction inside the 3/4 of the limit that
    `truncate_middle` keeps from the start."""

    def count(self, text: str) -> int:
        """Tokens of `text` (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def head(self, text: str, n: int) -> str:
        """The first `n` tokens of `text`, as text."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= n else self.tokenizer.decode(ids[:n]).rstrip()


def answer_cue(task: Any) -> str:
    """The short cue appended after the input for causal LMs (e.g. "Score:" for LaMP_3; see `TaskSpec.answer_cue`)."""
    from pplug.core.tasks import get_task

    return get_task(task).answer_cue


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
    budget: PromptBudget | None = None,
) -> str:
    """Compose the final prompt text of one example.

    Args:
        task: the TaskSpec (its `retrieval_text` writes retrieved items; its name picks the answer cue).
        input: the example's LaMP input (instruction + content), unchanged.
        retrieved: history items to put before the input, most relevant first ([] for no retrieval).
        persona: optional persona text (already rendered), put first on its own line.
        causal: True for decoder-only LLMs: append "\\n<cue>" so the target is the continuation.
        max_item_words: words kept per retrieved item (None keeps all).
        budget: the LLM's token budget; retrieved text is cut to what the rest of the prompt leaves, or to
            `budget.min_context_share` of it if that is more (dropped below `MIN_CONTEXT_TOKENS`). None: no
            fitting (the LLM cuts the prompt's middle).

    Returns:
        The prompt string, e.g. for LaMP_3 with one retrieved item and a causal LM:
        `'5 is the score for "great album", and ... . What is the score ... review: ...\\nScore:'`.
    """
    context = retrieved_text(task, retrieved, max_item_words) if retrieved else ""
    if context and budget is not None:
        left = budget.max_tokens - budget.count(_join(task, input, "", persona, causal)) - budget.count(". ")
        room = max(left, int(budget.min_context_share * budget.max_tokens))
        context = budget.head(context, room) if room >= MIN_CONTEXT_TOKENS else ""
    return _join(task, input, context, persona, causal)


def _join(task: Any, input: str, context: str, persona: str | None, causal: bool) -> str:
    text = input.strip()
    if context:
        text = f"{context}. {text}"
    if persona and persona.strip():
        text = f"{persona.strip()}\n{text}"
    if causal:
        text = f"{text}\n{answer_cue(task)}"
    return text


__all__ = ["answer_cue", "compose_prompt", "retrieved_text", "DEFAULT_MAX_ITEM_WORDS", "MIN_CONTEXT_TOKENS",
           "PromptBudget"]
