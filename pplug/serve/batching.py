"""The engine behind `pplug serve`: one frozen LLM, many users' requests batched into shared forward passes.

    request (user, input) --prepare (HTTP worker thread)--> Row: prompt text, query text, the user's context
    Rows --Batcher queue--> one engine thread: wait up to `window_ms` for more rows (at most `max_batch`)
        -> check the run folder's LATEST (a newly promoted version is loaded without a restart)
        -> one UserEmbedder call: the soft prompts of all rows (B, P, D), each row its own user
        -> one LLM pass: choice log-probs for label tasks (ratings decode with the checkpoint's decoding),
           greedy generation otherwise -> one result per row

Per-user cache (`UserContext`): the user's history items of the checkpoint's task, their frozen sentence
embeddings (N, d_enc) and the rendered persona text, keyed by (user id, the user's version in the store,
checkpoint version). The version (`UserStoreBase.user_version`: creation time, last interaction id, persona
version) is read from the store on every request, so a new interaction or persona is seen at the next
request, whichever replica sharing the store wrote it; a new promoted version changes the key too. What is
cached is the user's soft-prompt *input*: PPlug's soft prompt weighs the history against the current input
(input-aware attention), so the finished (P, D) prompt is recomputed per request from the cached embeddings
in one batched embedder call, which is cheap next to the LLM pass. The request's own input text is embedded
without touching the persistent embedding cache (`HistoryEncoder.encode_uncached`), so a server never stores
what users asked.

Only the engine thread runs the LLM; `encoder_lock` serialises use of the history encoder's cache between
the HTTP threads (history uploads, context building).

With a LoRA hub (`pplug serve --hub`, `pplug+lora-hub`), a user's context also holds the adapters their
persona text retrieves (a stored user's: the persona text of their history; a privacy-mode request's: the
`persona` text it carries; general for a cold start or a vector without persona text; either text embedded
uncached, so erasure has no persona vector to remove), and each batch runs
every row through its own user's (merged) adapters in the same forward pass (`LoRAHub.rows`). The hub is
versioned like the checkpoint: the same check before a batch stats the hub run folder's LATEST too, loads a
newly promoted (or rolled back) hub version beside the serving one on the same LLM, swaps the `HubSnapshot`
between batches and then unloads the old adapters; a version that does not load is logged and the last good
hub keeps serving. Contexts are keyed by the hub version as well, and a row whose adapters were retrieved
from an older hub retrieves again from the one serving its batch.

With `pplug serve --engine vllm`, `Engine.generator` (`pplug.serve.vllm.VLLMGenerator`) generates the rows of
generation tasks on vLLM from the same soft prompts; label tasks are still scored on the HF model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pplug.methods.batches import build_batch
from pplug.methods.registry import get_method, resolve_k
from pplug.core.checkpoints import LATEST_FILE, resolve as resolve_checkpoint
from pplug.lamp.data import Example
from pplug.adapt.fast import GENERATE_PERSONA_CHARS
from pplug.encode.history import top_k
from pplug.decode.inference import decode
from pplug.core.batch import PPlugBatch
from pplug.modeling.model import PPlugModel, history_label_tensor, mix_history_prior
from pplug.persona.render import render
from pplug.core.runtime import resolve_device
from pplug.store.schema import UnknownUserError
from pplug.store.base import UserStoreBase
from pplug.core.tasks import get_task


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
class HubSnapshot:
    """The LoRA hub version being served; swapped as a whole when the hub's LATEST changes."""

    hub: Any
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
    retrieval: Any = None
    """The LoRA hub adapters the user's persona text retrieves (served with a hub; None: the general one)."""
    hub_version: str | None = None
    """The hub version `retrieval` was made with (another one serving: retrieved again)."""


@dataclass
class Row:
    """One request's row of a batch."""

    prompt: str
    query: str
    ctx: UserContext
    max_new_tokens: int | None
    enqueued: float = field(default_factory=time.monotonic)


class _Prefixed:
    """Quacks like a PPlugModel for `decode`, with the soft prompts already computed (B, P, D).

    Keeps the last choice log-probs so the server can report the label distribution it decoded from.
    """

    def __init__(self, llm: Any, prefix: torch.Tensor, config: Any, generator: Any = None):
        self.llm, self.prefix, self.config, self.last_logp = llm, prefix, config, None
        self.generator = generator

    def choice_logprobs(self, batch: PPlugBatch, choices: list[str]) -> torch.Tensor:
        logp = self.llm.choice_logprobs(self.prefix, batch.prompts, choices)
        self.last_logp = mix_history_prior(logp, batch.history_stats, self.config.history_mix_items, self.config.task,
                                           choices)
        return self.last_logp

    def generate(self, batch: PPlugBatch, max_new_tokens: int | None = None, num_beams: int = 1) -> list[str]:
        if self.generator is not None and num_beams == 1:  # --engine vllm: the same rows, generated by vLLM
            return self.generator.generate(self.prefix, batch.prompts, max_new_tokens=max_new_tokens)
        return self.llm.generate(self.prefix, batch.prompts, max_new_tokens=max_new_tokens, num_beams=num_beams)


class Engine:
    """Loads a checkpoint once and serves batches of rows from many users.

    Args:
        checkpoint: a run folder (serves its LATEST, else final/) or a checkpoint folder.
        store: the user store (shared with the HTTP layer; it locks internally).
        device: "auto" or a torch device string.
        reload_interval: seconds between stats of LATEST (0: before every batch).
        embedding_cache: the history encoder's cache file (None: the shared pplug cache).
        max_cached_users: size of the per-user context LRU.
        expose_soft_prompts: add each row's soft prompt (P x D floats) to its result (tests, debugging;
            off in production: it is derived from the user's history).
        hub: a LoRA hub folder (or hub run folder) of the checkpoint's base LLM; the checkpoint must be a
            `pplug` one (`pplug+lora-hub`). A hub run folder's LATEST is checked with the checkpoint's (every
            `reload_interval` seconds): a promoted or rolled back hub version is served without a restart.
    """

    def __init__(self, checkpoint: str | os.PathLike, store: UserStoreBase, device: str = "auto",
                 reload_interval: float = 1.0, embedding_cache: Any = None, max_cached_users: int = 4096,
                 expose_soft_prompts: bool = False, hub: str | os.PathLike | None = None):
        self.root = Path(checkpoint)
        self.store = store
        self.device = resolve_device(device)
        self.reload_interval = float(reload_interval)
        self.max_cached_users = int(max_cached_users)
        self.expose_soft_prompts = bool(expose_soft_prompts)
        folder = resolve_checkpoint(self.root)
        model = PPlugModel.from_pretrained(folder, cache_path=embedding_cache, device=self.device)
        self.snapshot = self._snapshot(self._to_device(model), folder)
        self.encoder = model.history_encoder
        self.spec = get_task(model.config.task)
        self._embedding_cache = embedding_cache
        self.hub_root = Path(hub) if hub is not None else None
        self.hub_snapshot: HubSnapshot | None = None
        if hub is not None:
            from pplug.hub.methods import hub_method, load_hub
            from pplug.hub.files import resolve_hub

            if self.snapshot.decoding in ("mbr", "preference", "reward-mbr"):  # sampled candidates regroup rows
                raise ValueError(f"{folder}: decoding {self.snapshot.decoding!r} cannot run with a LoRA hub's "
                                 "per-row adapters; serve a checkpoint that decodes greedily")
            hub_folder = resolve_hub(hub)
            self._check_hub_task(hub_folder)
            loaded = load_hub(hub_folder, model.llm, self.encoder, cache_path=embedding_cache)
            hub_method(model, loaded)  # a pplug checkpoint, the hub on its LLM
            self.hub_snapshot = HubSnapshot(loaded, hub_folder, hub_folder.name)
        self.encoder_lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[tuple, UserContext]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._latest_stat = self._stat_latest(self.root)
        self._hub_stat = self._stat_latest(self.hub_root) if self.hub_root is not None else None
        self._last_check = time.monotonic()
        self.stats = {"batches": 0, "rows": 0, "max_batch_seen": 0, "reloads": 0, "hub_reloads": 0, "cache_hits": 0,
                      "cache_misses": 0}
        self.generator: Any = None
        """What generates instead of the HF model (`pplug.serve.vllm.attach` sets a VLLMGenerator); None: HF."""
        self.engine_info = {"name": "hf", "generation": "hf", "scoring": "hf"}

    # --- versions ---

    def _to_device(self, model: PPlugModel) -> PPlugModel:
        """The one place a served model is moved to the server's device."""
        model.eval()
        return model.to(self.device) if model.device != self.device else model

    def _snapshot(self, model: PPlugModel, folder: Path) -> Snapshot:
        cfg = model.config  # the folder describes itself: method, retrieval and decoding
        return Snapshot(model, folder, folder.name, cfg.method, cfg.retrieval_k, cfg.retriever, cfg.decoding)

    @property
    def hub(self) -> Any:
        """The LoRA hub being served (None: served without one)."""
        snap = self.hub_snapshot
        return snap.hub if snap is not None else None

    @property
    def hub_version(self) -> str | None:
        snap = self.hub_snapshot
        return snap.version if snap is not None else None

    @staticmethod
    def _stat_latest(root: Path) -> tuple | None:
        try:
            st = (root / LATEST_FILE).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _check_hub_task(self, folder: Path) -> None:
        from pplug.hub.files import read_hub_json

        task = read_hub_json(folder)["config"].task
        if task != self.spec.name:
            raise ValueError(f"{folder}: a LoRA hub for {task}, but the checkpoint is {self.spec.name}")

    def maybe_reload(self) -> bool:
        """Serve a newly promoted checkpoint or hub version if its LATEST changed (a stat each, at most every
        `reload_interval` seconds; the LLM and encoder are reused). Runs on the engine thread, between batches."""
        now = time.monotonic()
        if now - self._last_check < self.reload_interval:
            return False
        self._last_check = now
        model = self._reload_model()
        hub = self._reload_hub()
        return model or hub

    def _reload_model(self) -> bool:
        stat = self._stat_latest(self.root)
        if stat == self._latest_stat:
            return False
        self._latest_stat = stat
        cur = self.snapshot
        try:
            folder = resolve_checkpoint(self.root)
            if folder == cur.folder:
                return False
            model = PPlugModel.from_pretrained(folder, llm=cur.model.llm, history_encoder=cur.model.history_encoder)
            if model.config.task != cur.model.config.task:
                raise ValueError(f"{folder}: task {model.config.task} differs from the served {cur.model.config.task}")
            snap = self._snapshot(self._to_device(model), folder)
        except (OSError, ValueError) as e:  # a bad promotion must not take the server down: keep serving
            print(f"pplug serve: keeping {cur.version}: cannot load the new LATEST ({e})", file=sys.stderr)
            return False
        self.snapshot = snap
        self.stats["reloads"] += 1
        print(f"pplug serve: now serving {snap.version} ({snap.folder})", file=sys.stderr)
        return True

    def _reload_hub(self) -> bool:
        """Serve the hub version the hub run folder's LATEST names, loaded in full beside the serving one before
        the swap; a version that does not load (missing or corrupt files, another base LLM or encoder, another
        task) is logged and the serving hub stays."""
        cur = self.hub_snapshot
        if cur is None:
            return False
        stat = self._stat_latest(self.hub_root)
        if stat == self._hub_stat:
            return False
        self._hub_stat = stat
        try:
            from pplug.hub.methods import load_hub
            from pplug.hub.files import resolve_hub

            folder = resolve_hub(self.hub_root)
            if folder == cur.folder:
                return False
            self._check_hub_task(folder)
            hub = load_hub(folder, cur.hub.llm, self.encoder, cache_path=self._embedding_cache, attach_to=cur.hub)
        except Exception as e:  # HubError / CheckpointError and whatever else: the last good hub keeps serving
            print(f"pplug serve: keeping hub {cur.version}: cannot load the new hub LATEST of {self.hub_root} "
                  f"({' '.join(str(e).split())})", file=sys.stderr)
            return False
        self.hub_snapshot = HubSnapshot(hub, folder, folder.name)
        cur.hub.unload()  # no batch runs meanwhile (this is the engine thread): the old adapters leave the LLM
        self.stats["hub_reloads"] += 1
        print(f"pplug serve: now serving hub {folder.name} ({folder})", file=sys.stderr)
        return True

    # --- per-user context ---

    def cold_context(self, user_id: str | None = None) -> UserContext:
        return UserContext(user_id, [], torch.zeros(0, self.encoder.dim), None, cold_start=True)

    def user_context(self, user_id: str | None) -> tuple[UserContext, bool]:
        """(the user's context, cache hit?); unknown or absent users get the cold-start context."""
        version = None if user_id is None else self.store.user_version(user_id)
        if version is None:
            if user_id is not None:  # erased, maybe through another replica: drop what this one still holds
                self.invalidate(user_id)
            return self.cold_context(user_id), False
        try:
            return self._stored_context(user_id, version)
        except UnknownUserError:  # erased between the check and the reads
            return self.cold_context(user_id), False

    def _stored_context(self, user_id: str, version: tuple) -> tuple[UserContext, bool]:
        # the version is read before the rows: an interaction landing in between only makes the entry newer
        # than its key, and the next request re-reads it
        hub = self.hub_snapshot
        key = (version, self.snapshot.version, hub.version if hub is not None else None)
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
            if hub is not None:
                ctx.retrieval, ctx.hub_version = self._retrieve(ctx, hub.hub), hub.version
            with self._cache_lock:
                self._cache[user_id] = (key, ctx)
                self._cache.move_to_end(user_id)
                while len(self._cache) > self.max_cached_users:
                    self._cache.popitem(last=False)
                self.stats["cache_misses"] += 1
        return ctx, False

    def retrieval(self, items: list[dict]) -> Any:
        """The hub adapters a history retrieves (through its persona text; no history: the general one)."""
        return self.hub.retrieve_for_histories([items])[0]

    def private_context(self, emb: torch.Tensor, persona: str | None, stats: list[float] | None) -> UserContext:
        """A privacy-mode request's context: the client's embeddings, its persona text and, with a hub, the
        adapters that persona text retrieves (the rule of stored users' persona texts; no persona text: the
        general adapter). The persona text is embedded without touching the embedding cache."""
        ctx = UserContext(None, [], emb, persona, cold_start=emb.shape[0] == 0, private=True, stats=stats)
        hub = self.hub_snapshot
        if hub is not None:
            ctx.retrieval, ctx.hub_version = self._retrieve(ctx, hub.hub), hub.version
        return ctx

    @staticmethod
    def _retrieve(ctx: UserContext, hub: Any) -> Any:
        """One rule for every context: the adapters a persona text retrieves (`LoRAHub.retrieve`), the text being
        a stored user's history persona text (`LoRAHub.persona_text`) or a privacy-mode request's own `persona`;
        an empty text gets the general adapter. Either text is embedded uncached (`rank_adapters`): nothing of
        it reaches the embedding cache, so erasure has nothing of it to remove."""
        text = ctx.persona if ctx.private else hub.persona_text(ctx.items)
        return hub.retrieve([text])[0]

    def _row_retrieval(self, ctx: UserContext, hub: HubSnapshot) -> Any:
        """The row's adapters on the hub serving its batch (retrieved again when the context's came from another
        hub version)."""
        if ctx.retrieval is not None and ctx.hub_version == hub.version:
            return ctx.retrieval
        return self._retrieve(ctx, hub.hub)

    def invalidate(self, user_id: str) -> int:
        """Drop a user's cached context (after erasure; other changes already change the key)."""
        with self._cache_lock:
            return int(self._cache.pop(user_id, None) is not None)

    # --- rows and batches ---

    def prepare(self, input_text: str, ctx: UserContext, max_new_tokens: int | None = None) -> Row:
        """The row of one request: the LaMP-style prompt (input wrapped in the task's instruction when it
        is plain content, persona text, retrieved items for retrieval methods)."""
        snap, spec = self.snapshot, self.spec
        text = input_text if any(m in input_text for m in spec.query_markers) else spec.make_input(input_text)
        llm = snap.model.llm
        k = resolve_k(get_method(snap.method), snap.retrieval_k)
        retrieved = None
        if k and snap.retriever == "embedding":
            items = ctx.items
            if ctx.emb.shape[0] and items:
                q = self.encoder.encode_uncached([spec.query_text(text)])[0]
                retrieved = [[items[i] for i in top_k(ctx.emb, q, k)]]
            else:
                retrieved = [[]]
        ex = Example(id="0", input=text, profile=ctx.items, user_id=ctx.user_id)
        batch = build_batch(spec, [ex], snap.method, causal=not llm.is_seq2seq, max_history=snap.model.config.max_history,
                            retrieved=retrieved, retrieval_k=k or None, retriever=snap.retriever,
                            personas=[ctx.persona], with_targets=False, budget=llm.prompt_budget())
        return Row(batch.prompts[0], batch.queries[0], ctx, max_new_tokens)

    @torch.no_grad()
    def run_batch(self, rows: list[Row]) -> list[dict]:
        """Outputs for rows of possibly different users: one embedder call, one LLM pass per generation budget."""
        self.maybe_reload()
        snap, hsnap = self.snapshot, self.hub_snapshot
        model, llm = snap.model, snap.model.llm
        n_max = model.config.max_history
        kept = [r.ctx.emb[-n_max:] for r in rows]
        n = max((int(e.shape[0]) for e in kept), default=0)
        emb = torch.zeros(len(rows), n, self.encoder.dim)
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        for i, e in enumerate(kept):
            emb[i, : e.shape[0]] = e
            mask[i, : e.shape[0]] = True
        queries = [r.query for r in rows]
        q_in: Any = None
        if model.embedder.needs_query:
            q_in = queries if model.embedder.needs_query_text else self.encoder.encode_uncached(queries)
        spec = self.spec
        stats = None
        if model.config.reads_history_stats:  # the same items the embeddings cover
            stats = torch.tensor([r.ctx.stats if r.ctx.stats is not None else spec.history_stats(r.ctx.items[-n_max:])
                                  for r in rows])
        labels = None
        if model.config.reads_history_labels:  # the same items the embeddings cover (stored users only)
            labels = history_label_tensor([spec.history_label_indices(r.ctx.items[-n_max:]) for r in rows], n_max, n)
        prefix = model.embedder(emb.to(model.device), mask.to(model.device), q_in, stats, labels)  # (B, P, D)
        outs: list[dict] = [{} for _ in rows]
        if spec.labels:
            groups = {None: list(range(len(rows)))}
        else:
            groups: dict[int | None, list[int]] = {}
            for i, r in enumerate(rows):
                groups.setdefault(r.max_new_tokens or spec.max_new_tokens, []).append(i)
        hub = hsnap.hub if hsnap is not None else None
        retrievals = [self._row_retrieval(r.ctx, hsnap) for r in rows] if hsnap is not None else None
        for budget, idx in groups.items():
            sub = _Prefixed(llm, prefix[idx], model.config, self.generator)
            batch = PPlugBatch([rows[i].prompt for i in idx], [queries[i] for i in idx], [[] for _ in idx],
                               history_stats=stats[idx].tolist() if stats is not None else None)
            with (hub.rows(hub.adapters_for([retrievals[i] for i in idx])) if retrievals
                  else contextlib.nullcontext()):
                texts = decode(sub, spec, batch, decoding=snap.decoding, max_new_tokens=budget)
            probs = sub.last_logp.float().softmax(-1).cpu() if sub.last_logp is not None else None
            for j, i in enumerate(idx):
                outs[i] = {"text": texts[j], "history_items": int(kept[i].shape[0]),
                           "label_probs": ({lab: float(p) for lab, p in zip(spec.labels, probs[j])}
                                           if probs is not None else None)}
        n_prompt = [len(ids) for ids in llm.prompt_ids([r.prompt for r in rows])]
        for i, o in enumerate(outs):
            if self.expose_soft_prompts:
                o["soft_prompt"] = prefix[i].float().cpu().tolist()
            if retrievals:
                from pplug.hub.methods import adapters_meta

                o["adapters"] = adapters_meta(retrievals[i])
                o["hub_version"] = hsnap.version
            o.update(version=snap.version, decoding=snap.decoding if spec.labels else "greedy", batch_size=len(rows),
                     prompt_tokens=n_prompt[i] + int(prefix.shape[1]),
                     completion_tokens=len(llm.tokenizer(o["text"], add_special_tokens=False)["input_ids"]))
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(rows))
        return outs


class Batcher:
    """Dynamic batching: rows queue up; one thread takes the first, waits up to `window_ms` for more (at most
    `max_batch` in all), runs them as one batch and hands each caller its result.

    `max_batch=1` serves every request on its own (the unbatched baseline of the load benchmark).
    """

    def __init__(self, engine: Engine, max_batch: int = 32, window_ms: float = 10.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.engine, self.max_batch, self.window = engine, int(max_batch), max(0.0, window_ms) / 1000.0
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pplug-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def submit(self, row: Row) -> dict:
        """Queue a row and wait for its output (raises what the batch raised)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put((row, loop, fut))
        return await fut

    def _collect(self, first) -> tuple[list, bool]:
        items, stop = [first], False
        deadline = time.monotonic() + self.window
        while len(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                nxt = self._q.get(timeout=remaining) if remaining > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                stop = True
                break
            items.append(nxt)
        return items, stop

    def _run(self, rows: list[Row]) -> list[Any]:
        """Results (or the exception) per row; a failing batch is retried row by row, so one bad row
        fails only its own request."""
        try:
            return self.engine.run_batch(rows)
        except Exception as e:
            if len(rows) == 1:
                return [e]
        return [self._run([r])[0] for r in rows]

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
            if first is None:
                return
            items, stop = self._collect(first)
            results = self._run([row for row, _, _ in items])
            for (_, loop, fut), res in zip(items, results):
                loop.call_soon_threadsafe(_settle, fut, res)


def _settle(fut: asyncio.Future, res: Any) -> None:
    if fut.done():  # the client went away
        return
    if isinstance(res, BaseException):
        fut.set_exception(res)
    else:
        fut.set_result(res)


__all__ = ["Batcher", "Engine", "HubSnapshot", "Row", "Snapshot", "UserContext"]
