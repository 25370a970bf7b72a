"""What a request to `pplug serve` becomes before it is batched: the user's context (cached) and the request's row.

The served versions (`Snapshot`, `PluginSnapshot`) are what a context and a row are read against; `Row` is one
request's row of a batch (`prepare_row`: the prompt text of the checkpoint's method and the query).

Per-user cache (`UserContexts`, of `UserContext`): the user's history items of the checkpoint's task, their
frozen sentence embeddings (N, d_enc) and the rendered persona text, keyed by (user id, the user's version
in the store, checkpoint version). The version (`UserStoreBase.user_version`: creation time, last interaction
id, persona version) is read from the store on every request, so a new interaction or persona is seen at the
next request, whichever replica sharing the store wrote it; a new promoted version changes the key too. What
is cached is the user's soft-prompt *input*: PPlug's soft prompt weighs the history against the current input
(input-aware attention), so the finished (P, D) prompt is recomputed per request from the cached embeddings
in one batched embedder call, which is cheap next to the LLM pass. The request's own input text is embedded
without touching the persistent embedding cache (`HistoryEncoder.encode_uncached`), so a server never stores
what users asked. `encoder_lock` serialises use of the history encoder's cache between the HTTP threads
(history uploads, context building, erasure).

With a method plug-in served (a LoRA hub, `--hub DIR`), a user's context also holds the plug-in's state for
the user (`plugin_state`; a hub: the adapters their persona text retrieves: a stored user's, the persona text of
their history; a privacy-mode request's, the `persona` text it carries; general for a cold start or a vector
without persona text; either text embedded uncached, so erasure has no persona vector to remove). Contexts are
keyed by the plug-in version as well, and a row whose state came from an older version is made again on the one
serving its batch (`row_state`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pplug.adapt.fast import GENERATE_PERSONA_CHARS
from pplug.core.tasks import TaskSpec
from pplug.encode.history import HistoryEncoder, top_k
from pplug.lamp.data import Example
from pplug.methods.batches import build_batch
from pplug.methods.registry import get_method, resolve_k
from pplug.modeling.model import PPlugModel
from pplug.persona.render import render
from pplug.store.base import UserStoreBase
from pplug.store.schema import UnknownUserError


@dataclass
class Snapshot:
    """The version being served; swapped as a whole when LATEST changes (readers take one reference)."""

    model: PPlugModel
    folder: Path
    version: str
    method: str
    retrieval_k: int | None
    retriever: str
    decoding: str


@dataclass
class PluginSnapshot:
    """The method plug-in version being served (a LoRA hub); swapped as a whole when its LATEST changes."""

    name: str
    """The plug-in's registry name ("hub"), the prefix of its reply fields (`hub_version`)."""
    plugin: Any
    """The loaded plug-in (`pplug.methods.registry.MethodPlugin`)."""
    folder: Path
    version: str


@dataclass
class UserContext:
    """What a user's soft prompt is computed from (cached per user, see the module docstring)."""

    user_id: str | None
    items: list[dict]
    """History items of the checkpoint's task, oldest first (the whole history; retrieval reads it)."""
    emb: torch.Tensor
    """(N, d_enc) frozen embeddings of `items` (or of the client's history in privacy mode)."""
    persona: str | None
    """Rendered persona text put in front of the prompt (None: no persona)."""
    cold_start: bool = False
    private: bool = False
    stats: list[float] | None = None
    """`TaskSpec.history_stats` sent by a privacy-mode client (stored users: computed from `items`)."""
    plugin_state: Any = None
    """What the served plug-in keeps for the user (a LoRA hub: the adapters their persona text retrieves)."""
    plugin_version: str | None = None
    """The plug-in version `plugin_state` was made with (another one serving: made again)."""


@dataclass
class Row:
    """One request's row of a batch."""

    prompt: str
    query: str
    ctx: UserContext
    max_new_tokens: int | None
    enqueued: float = field(default_factory=time.monotonic)


class UserContexts:
    """The users' contexts of one server: read from the store, cached in an LRU of `max_cached_users`.

    `stats` is the engine's counter dict: "cache_hits" and "cache_misses" are counted in it.
    """

    def __init__(self, store: UserStoreBase, spec: TaskSpec, encoder: HistoryEncoder, max_cached_users: int,
                 stats: dict[str, int]):
        self.store, self.spec, self.encoder = store, spec, encoder
        self.max_cached_users = int(max_cached_users)
        self.stats = stats
        self.encoder_lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[tuple, UserContext]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def cold(self, user_id: str | None = None) -> UserContext:
        """The context of a user without history: the checkpoint's learned default user vector."""
        return UserContext(user_id, [], torch.zeros(0, self.encoder.dim), None, cold_start=True)

    def get(self, user_id: str | None, version: str, plugin: PluginSnapshot | None) -> tuple[UserContext, bool]:
        """(the user's context for checkpoint `version` and the served `plugin`, cache hit?); unknown or absent
        users get the cold-start context."""
        user_version = None if user_id is None else self.store.user_version(user_id)
        if user_version is None:
            if user_id is not None:  # erased, maybe through another replica: drop what this one still holds
                self.invalidate(user_id)
            return self.cold(user_id), False
        try:
            return self._stored(user_id, (user_version, version, plugin.version if plugin is not None else None),
                                plugin)
        except UnknownUserError:  # erased between the check and the reads
            return self.cold(user_id), False

    def _stored(self, user_id: str, key: tuple, plugin: PluginSnapshot | None) -> tuple[UserContext, bool]:
        # the user's version is read before the rows: an interaction landing in between only makes the entry
        # newer than its key, and the next request re-reads it
        with self._cache_lock:
            hit = self._cache.get(user_id)
            if hit is not None and hit[0] == key:
                self._cache.move_to_end(user_id)
                self.stats["cache_hits"] += 1
                return hit[1], True
        items = self.store.history_items(user_id, task=self.spec.name)
        texts = [self.spec.history_text(it) for it in items]
        persona = render(self.store.persona(user_id), None, max_chars=GENERATE_PERSONA_CHARS) or None
        with self.encoder_lock:
            # erasure holds this lock from its cache deletes to its store commit: a user erased while we
            # read must not have its texts written back to the embedding cache, nor a context cached
            if not self.store.has_user(user_id):
                raise UnknownUserError(user_id)
            emb = self.encoder.encode(texts) if texts else torch.zeros(0, self.encoder.dim)
            ctx = UserContext(user_id, items, emb, persona, cold_start=not items)
            if plugin is not None:
                ctx.plugin_state, ctx.plugin_version = plugin_state(ctx, plugin.plugin), plugin.version
            with self._cache_lock:
                self._cache[user_id] = (key, ctx)
                self._cache.move_to_end(user_id)
                while len(self._cache) > self.max_cached_users:
                    self._cache.popitem(last=False)
                self.stats["cache_misses"] += 1
        return ctx, False

    def private(self, emb: torch.Tensor, persona: str | None, stats: list[float] | None,
                plugin: PluginSnapshot | None) -> UserContext:
        """A privacy-mode request's context: the client's embeddings (N, d_enc), its persona text and, with a
        served plug-in, what that persona text gives it (`plugin_state`)."""
        ctx = UserContext(None, [], emb, persona, cold_start=emb.shape[0] == 0, private=True, stats=stats)
        if plugin is not None:
            ctx.plugin_state, ctx.plugin_version = plugin_state(ctx, plugin.plugin), plugin.version
        return ctx

    def invalidate(self, user_id: str) -> int:
        """Drop a user's cached context (after erasure; other changes already change the key)."""
        with self._cache_lock:
            return int(self._cache.pop(user_id, None) is not None)


def plugin_state(ctx: UserContext, plugin: Any) -> Any:
    """One rule for every context: a stored user's state comes from their history, a privacy-mode request's
    from its own persona text (a LoRA hub: the adapters that persona text retrieves, embedded uncached, so
    nothing of it reaches the embedding cache and erasure has nothing of it to remove)."""
    return plugin.state_for_persona(ctx.persona) if ctx.private else plugin.state_for_history(ctx.items)


def row_state(ctx: UserContext, plugin: PluginSnapshot) -> Any:
    """The row's state on the plug-in version serving its batch (made again when the context's came from
    another version)."""
    if ctx.plugin_state is not None and ctx.plugin_version == plugin.version:
        return ctx.plugin_state
    return plugin_state(ctx, plugin.plugin)


def prepare_row(snap: Snapshot, spec: TaskSpec, encoder: HistoryEncoder, input_text: str, ctx: UserContext,
                max_new_tokens: int | None = None) -> Row:
    """The row of one request: the LaMP-style prompt of the served method (input wrapped in the task's
    instruction when it is plain content, persona text, retrieved items for retrieval methods)."""
    text = input_text if any(m in input_text for m in spec.query_markers) else spec.make_input(input_text)
    llm = snap.model.llm
    k = resolve_k(get_method(snap.method), snap.retrieval_k)
    retrieved = None
    if k and snap.retriever == "embedding":
        items = ctx.items
        if ctx.emb.shape[0] and items:
            q = encoder.encode_uncached([spec.query_text(text)])[0]
            retrieved = [[items[i] for i in top_k(ctx.emb, q, k)]]
        else:
            retrieved = [[]]
    ex = Example(id="0", input=text, profile=ctx.items, user_id=ctx.user_id)
    batch = build_batch(spec, [ex], snap.method, causal=not llm.is_seq2seq, max_history=snap.model.config.max_history,
                        retrieved=retrieved, retrieval_k=k or None, retriever=snap.retriever,
                        personas=[ctx.persona], with_targets=False, budget=llm.prompt_budget())
    return Row(batch.prompts[0], batch.queries[0], ctx, max_new_tokens)


__all__ = ["PluginSnapshot", "Row", "Snapshot", "UserContext", "UserContexts", "plugin_state", "prepare_row",
           "row_state"]
