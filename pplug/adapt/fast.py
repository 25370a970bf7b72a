"""Fast adaptation: new history changes the output with no training.

`add_history`, on every new interaction: append to the store -> embed once (cached; also the persona's
long-term memory) -> recompute the derived persona fields (new persona version + JSON diff). The next
request already sees the new history: PPlug reads all of it, so the user embedding -- and the output --
change with no training. Optionally, every `propose_every` interactions a pluggable proposer (e.g. an LLM,
AI Persona's scheme) suggests persona edits, recorded as another version with its diff. `user_batch` builds
the serving batch of a stored user (history, persona text, recalled items).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pplug.persona.from_history import derive_from_history
from pplug.persona.render import render
from pplug.persona.schema import Persona, PersonaError, apply_updates, diff
from pplug.store.base import UserStoreBase
from pplug.store.validation import check_idempotency_key, check_items

GENERATE_PERSONA_CHARS = 400
"""Bound on the persona text put in front of prompts by `user_batch` (about 100 LLM tokens)."""

PersonaProposer = Callable[[Persona, list[dict], Any], dict | None]
"""(current persona, recent items, TaskSpec) -> partial persona dict of edits, or None for no change."""


class AdaptError(ValueError):
    """A one-line user-facing adaptation error."""


@dataclass
class AddHistoryResult:
    """What `add_history` did."""

    ids: list[int]
    """Store ids of the appended interactions."""
    persona_version: int
    """Persona version after the update (unchanged when nothing derived changed)."""
    diff: list[dict]
    """JSON diff of the derived-field update ([] if none)."""
    proposed: list[dict] = field(default_factory=list)
    """JSON diff of the proposer's edits ([] if it did not run or changed nothing)."""
    replayed: bool = False
    """True: the upload's idempotency key was recorded already; nothing was written, the fields are the first
    upload's."""


def add_history(
    store: UserStoreBase,
    user_id: str,
    items: Sequence[dict],
    encoder: Any,
    task: str | None = None,
    proposer: PersonaProposer | None = None,
    propose_every: int = 20,
    idempotency_key: str | None = None,
) -> AddHistoryResult:
    """Fast adaptation: append interactions, cache their embeddings, refresh derived persona fields.

    The items, their memory vectors, the derived persona version and the idempotency record are ONE store
    transaction (`UserStoreBase.append_history`): a crash leaves all of them or none.

    Args:
        store: the user store.
        user_id: an existing user.
        items: new LaMP profile items of `task`, oldest first.
        encoder: a `pplug.encode.history.HistoryEncoder` (use the model's encoder so serving hits the cache).
        task: the items' task (default: the user's task, given at create).
        proposer: optional persona editor called every `propose_every` interactions (default off).
        propose_every: k of "every k interactions".
        idempotency_key: the client's key of this upload (1 to 255 visible ASCII characters, e.g. a UUID): an
            upload retried with the same key (after a timeout, a crash) stores nothing twice and returns the
            first upload's result (`replayed`); the same key with other items is an error.

    Returns:
        AddHistoryResult with the new ids, persona version and diffs.

    Raises:
        InvalidInputError: (a ValueError) an item breaks the rules of `pplug.store.validation` for the task; the
            message names the item index and field, and nothing is written.
        UnknownUserError: no such user (also when erased meanwhile).
        IdempotencyKeyReusedError: the key was used for another upload of this user.
    """
    from pplug.core.tasks import get_task

    task = task or store.user_task(user_id)
    if task is None:
        raise AdaptError(f"user {user_id!r} has no task: pass task= (CLI --task)")
    spec = get_task(task)
    items = check_items(items, spec)  # all of them before the first write; labels in their stored spelling
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
    texts = [spec.history_text(it) for it in items]
    emb = encoder.encode(texts) if items else None  # (N, dim): cached now, so serving never waits on it

    def refresh(old: Persona, history: list[dict]) -> Persona:  # runs inside the store's transaction
        return apply_updates(old, derive_from_history(history, spec), source=f"derived persona of {user_id}")

    done = store.append_history(user_id, items, spec.name, emb, encoder.identity, refresh=refresh,
                                message=f"+{len(items)} {spec.name} interactions", idempotency_key=idempotency_key)
    version, proposed = done.persona_version, []
    if done.replayed:
        return AddHistoryResult(ids=done.ids, persona_version=version, diff=done.persona_diff, replayed=True)
    after = store.count_interactions(user_id, task=spec.name)
    before = after - len(items)  # other writers' items may have landed too: "crossing a multiple" stays the rule
    if proposer is not None and propose_every > 0 and after // propose_every > before // propose_every:
        current = store.persona(user_id)
        history = store.history_items(user_id, task=spec.name)
        edits = proposer(current, history[-propose_every:], spec)
        if edits:
            try:
                edited = apply_updates(current, edits, source=f"proposer edits for {user_id}")
            except PersonaError as e:
                print(f"pplug: persona proposer output ignored: {e}", file=sys.stderr)
            else:
                proposed = diff(current.to_dict(), edited.to_dict())
                version = store.update_persona(user_id, edited, source="proposer", message="proposed edits")
    return AddHistoryResult(ids=done.ids, persona_version=version, diff=done.persona_diff, proposed=proposed)


_PROPOSER_PROMPT = """You maintain a short profile of a user. Current profile:
{persona}
Their latest items:
{items}
Update the profile. Answer with lines "field: value1, value2" using only these fields: {fields}.
"""


def llm_proposer(
    generate: Callable[[str], str],
    fields: Sequence[str] = ("personality.interests", "preference.styles", "pattern.behaviour"),
    max_items: int = 10,
) -> PersonaProposer:
    """A proposer that asks an LLM for persona edits (AI Persona's "update every k interactions").

    Args:
        generate: prompt -> completion (any LLM; e.g. `lambda p: model.llm.generate_text(p)`).
        fields: the list-valued persona fields the LLM may edit ("section.key").
        max_items: recent items shown to the LLM.

    Returns:
        A `PersonaProposer`; lines that do not parse or name other fields are ignored.
    """
    allowed = list(fields)

    def propose(persona: Persona, items: list[dict], task: Any) -> dict | None:
        shown = "\n".join(f"- {task.history_text(it)[:200]}" for it in items[-max_items:])
        reply = generate(_PROPOSER_PROMPT.format(persona=render(persona), items=shown, fields=", ".join(allowed)))
        edits: dict[str, Any] = {}
        for line in reply.splitlines():
            key, sep, value = line.strip().lstrip("-* ").partition(":")
            if not sep or key.strip() not in allowed:
                continue
            values = [v.strip() for v in value.split(",") if v.strip()]
            if values:
                section, sub = key.strip().split(".", 1)
                edits.setdefault(section, {})[sub] = values[:8]
        return edits or None

    return propose


def item_example(task: Any, item: dict, profile: list[dict], example_id: str, user_id: str | None = None):
    """A LaMP `Example` from one interaction: the question it answers, its output as the gold.

    E.g. a LaMP_3 item {"text": t, "score": "4"} becomes input "What is the score ... review: t", output "4".
    """
    from pplug.lamp.data import Example

    if not task.input_field or not task.output_field:
        raise AdaptError(f"task {task.name}: history items carry no (input, output) pair, so it cannot be "
                         "retrained from interactions")
    missing = [f for f in (task.input_field, task.output_field) if f not in item]
    if missing:
        raise AdaptError(f"interaction {example_id}: field '{missing[0]}': missing (needed to retrain {task.name})")
    return Example(
        id=example_id,
        input=task.make_input(str(item[task.input_field])),
        profile=list(profile),
        output=str(item[task.output_field]),
        user_id=user_id,
    )


def user_batch(
    store: UserStoreBase,
    user_id: str,
    inputs: Sequence[str],
    task: Any,
    method: str = "pplug",
    causal: bool = True,
    max_history: int | None = None,
    persona_fields: Sequence[str] | str | None = None,
    use_persona: bool = True,
    retrieval_k: int | None = None,
    retriever: str = "bm25",
    encoder: Any = None,
    budget: Any = None,
):
    """A `PPlugBatch` for one stored user: the store's history feeds the user embedding, the rendered
    persona goes in front of the prompt, and retrieval methods recall from the user's long-term memory.

    Args:
        store, user_id: where the user lives.
        inputs: LaMP-style inputs (instruction + content).
        task: TaskSpec or name.
        method: a `pplug.methods` method ("pplug", "pplug+retrieval", ...).
        causal: decoder-only LLM (adds the answer cue).
        max_history: most recent items feeding the embedding.
        persona_fields: persona fields to render (None = `pplug.persona.DEFAULT_FIELDS`).
        use_persona: False leaves the persona text out.
        retrieval_k: items put into the prompt for retrieval methods (None = the method's default).
        retriever: "bm25" over the history, or "embedding": recall from the user's long-term memory
            (the store's faiss index; needs `encoder`).
        encoder: a HistoryEncoder (the model's), for embedding recall.
        budget: the LLM's `PromptBudget` (recalled items are fitted to the prompt limit); None: no fitting.
    """
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch
    from pplug.methods.registry import get_method, resolve_k

    spec = get_task(task)
    items = store.history_items(user_id, task=spec.name)
    persona_text = render(store.persona(user_id), persona_fields, max_chars=GENERATE_PERSONA_CHARS) if use_persona else None
    examples = [Example(id=str(i), input=x, profile=items, user_id=user_id) for i, x in enumerate(inputs)]
    retrieved = None
    k = resolve_k(get_method(method), retrieval_k)
    if k and retriever == "embedding":
        if encoder is None:
            raise AdaptError(f"method {method!r} recalls history items: pass a history encoder")
        retrieved = [[r.item for r, _ in store.recall(user_id, spec.query_text(x), k, encoder)] for x in inputs]
    return build_batch(
        spec, examples, method, causal=causal, max_history=max_history, retrieved=retrieved, retrieval_k=k or None,
        retriever=retriever, encoder=encoder, personas=[persona_text] * len(examples), with_targets=False,
        budget=budget,
    )


__all__ = ["AdaptError", "AddHistoryResult", "GENERATE_PERSONA_CHARS", "PersonaProposer", "add_history",
           "item_example", "llm_proposer", "user_batch"]
