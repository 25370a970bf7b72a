"""The engine behind `pplug serve`: one frozen LLM, many users' requests batched into shared forward passes.

    request (user, input) --prepare (HTTP worker thread)--> Row: prompt text, query text, the user's context
    Rows --Batcher queue--> one engine thread: wait up to `window_ms` for more rows (at most `max_batch`)
        -> check the run folder's LATEST (a newly promoted version is loaded without a restart)
        -> one UserEmbedder call: the soft prompts of all rows (B, P, D), each row its own user
        -> one LLM pass: choice log-probs for label tasks (mixed with the user's history prior and decoded
           with the checkpoint's decoding, `pplug.modeling.label_rules`), greedy generation otherwise
           (`pplug.modeling.prefixed.PrefixedModel` decodes from the soft prompts) -> one result per row

The user's context a row is read against (cached per user), the row itself and the served versions are
`pplug.serve.contexts`.

Only the engine thread runs the LLM; `encoder_lock` serialises use of the history encoder's cache between
the HTTP threads (history uploads, context building, erasure).

With a method plug-in (`pplug.methods.registry`; the LoRA hub: `pplug serve --hub`, `pplug+lora-hub`), a
user's context also holds the plug-in's state for the user (`pplug.serve.contexts.plugin_state`; a hub: the
adapters their persona text retrieves), and each batch runs every row through its own state in the same forward
pass (`MethodPlugin.run_rows`). The plug-in is versioned like the checkpoint: the same check before a batch stats
its run folder's LATEST too, loads a newly promoted (or rolled back) version beside the serving one on the same
LLM, swaps the `PluginSnapshot` between batches and then unloads the old one; a version that does not load is
logged and the last good one keeps serving.

`Batcher.call` runs other work on the served model (`POST /v1/explain`) on the same engine thread, alone, between
batches.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pplug.core.batch import PPlugBatch
from pplug.core.checkpoints import LATEST_FILE
from pplug.core.checkpoints import resolve as resolve_checkpoint
from pplug.core.runtime import resolve_device
from pplug.core.tasks import get_task
from pplug.decode.inference import decode
from pplug.methods.registry import PLUGINS, get_plugin, load_plugins
from pplug.modeling.label_rules import decode_labels
from pplug.modeling.embedder import history_label_tensor
from pplug.modeling.model import PPlugModel
from pplug.modeling.prefixed import PrefixedModel
from pplug.store.base import UserStoreBase

from .contexts import PluginSnapshot, Row, Snapshot, UserContext, UserContexts, prepare_row, row_state


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
        plugins: at most one method plug-in name -> its folder (`{"hub": DIR}`: a LoRA hub or hub run folder of
            the checkpoint's base LLM, served as `pplug+lora-hub` with a `pplug` checkpoint). A run folder's LATEST
            is checked with the checkpoint's (every `reload_interval` seconds): a promoted or rolled back version
            is served without a restart.
    """

    def __init__(self, checkpoint: str | os.PathLike, store: UserStoreBase, device: str = "auto",
                 reload_interval: float = 1.0, embedding_cache: Any = None, max_cached_users: int = 4096,
                 expose_soft_prompts: bool = False, plugins: Mapping[str, str | os.PathLike] | None = None):
        self.root = Path(checkpoint)
        self.store = store
        self.device = resolve_device(device)
        self.reload_interval = float(reload_interval)
        self.expose_soft_prompts = bool(expose_soft_prompts)
        folder = resolve_checkpoint(self.root)
        model = PPlugModel.from_pretrained(folder, cache_path=embedding_cache, device=self.device)
        self.snapshot = self._snapshot(self._to_device(model), folder)
        self.encoder = model.history_encoder
        self.spec = get_task(model.config.task)
        self._embedding_cache = embedding_cache
        self.served_method = model.config.method
        """The method served: the checkpoint's own, or the plug-in's method that runs its weights."""
        self.plugin_root: Path | None = None
        self.plugin_snapshot: PluginSnapshot | None = None
        if plugins:
            if len(plugins) > 1:
                raise ValueError(f"serve one method plug-in at a time, not {', '.join(plugins)}")
            (name, root), = plugins.items()
            spec = get_plugin(name)
            try:
                combined = spec.method_for(model.config.method)
            except ValueError as e:
                raise ValueError(f"{folder}: {e}") from None
            if self.snapshot.decoding in ("mbr", "preference", "reward-mbr"):  # sampled candidates regroup rows
                raise ValueError(f"{folder}: decoding {self.snapshot.decoding!r} cannot run with the {name} "
                                 "plug-in's per-row state; serve a checkpoint that decodes greedily")
            self.plugin_root, plugin_folder = Path(root), spec.resolve(root)
            self._check_plugin_task(name, plugin_folder)
            loaded = spec.load(plugin_folder, model.llm, self.encoder, cache_path=embedding_cache)
            self.plugin_snapshot = PluginSnapshot(name, loaded, plugin_folder, plugin_folder.name)
            self.served_method = combined.name
        self._latest_stat = self._stat_latest(self.root)
        self._plugin_stat = self._stat_latest(self.plugin_root) if self.plugin_root is not None else None
        self._last_check = time.monotonic()
        self.stats = {"batches": 0, "rows": 0, "max_batch_seen": 0, "reloads": 0, "cache_hits": 0, "cache_misses": 0,
                      **({f"{self.plugin_snapshot.name}_reloads": 0} if self.plugin_snapshot else {})}
        self.contexts = UserContexts(store, self.spec, self.encoder, max_cached_users, self.stats)
        self.encoder_lock = self.contexts.encoder_lock
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
    def plugin(self) -> Any:
        """The method plug-in being served (None: served without one)."""
        snap = self.plugin_snapshot
        return snap.plugin if snap is not None else None

    def plugin_versions(self) -> dict[str, str | None]:
        """`<name>_version` of every installed method plug-in: the served one's version, None for the others
        (replies always carry the keys, e.g. `hub_version`)."""
        load_plugins()
        snap = self.plugin_snapshot
        return {f"{name}_version": snap.version if snap is not None and snap.name == name else None
                for name in PLUGINS}

    @staticmethod
    def _stat_latest(root: Path) -> tuple | None:
        try:
            st = (root / LATEST_FILE).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _check_plugin_task(self, name: str, folder: Path) -> None:
        task = get_plugin(name).task(folder)
        if task != self.spec.name:
            raise ValueError(f"{folder}: a {name} for {task}, but the checkpoint is {self.spec.name}")

    def maybe_reload(self) -> bool:
        """Serve a newly promoted checkpoint or plug-in version if its LATEST changed (a stat each, at most every
        `reload_interval` seconds; the LLM and encoder are reused). Runs on the engine thread, between batches."""
        now = time.monotonic()
        if now - self._last_check < self.reload_interval:
            return False
        self._last_check = now
        model = self._reload_model()
        plugin = self._reload_plugin()
        return model or plugin

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

    def _reload_plugin(self) -> bool:
        """Serve the plug-in version its run folder's LATEST names, loaded in full beside the serving one before
        the swap; a version that does not load (missing or corrupt files, another base LLM or encoder, another
        task) is logged and the serving version stays."""
        cur = self.plugin_snapshot
        if cur is None:
            return False
        stat = self._stat_latest(self.plugin_root)
        if stat == self._plugin_stat:
            return False
        self._plugin_stat = stat
        spec = get_plugin(cur.name)
        try:
            folder = spec.resolve(self.plugin_root)
            if folder == cur.folder:
                return False
            self._check_plugin_task(cur.name, folder)
            loaded = spec.load(folder, cur.plugin.llm, self.encoder, cache_path=self._embedding_cache,
                               attach_to=cur.plugin)
        except Exception as e:  # HubError / CheckpointError and whatever else: the last good version keeps serving
            print(f"pplug serve: keeping {cur.name} {cur.version}: cannot load the new {cur.name} LATEST of "
                  f"{self.plugin_root} ({' '.join(str(e).split())})", file=sys.stderr)
            return False
        self.plugin_snapshot = PluginSnapshot(cur.name, loaded, folder, folder.name)
        cur.plugin.unload()  # no batch runs meanwhile (this is the engine thread): the old version leaves the LLM
        self.stats[f"{cur.name}_reloads"] += 1
        print(f"pplug serve: now serving {cur.name} {folder.name} ({folder})", file=sys.stderr)
        return True

    # --- per-user context ---

    def cold_context(self, user_id: str | None = None) -> UserContext:
        """The context of a user without history (the checkpoint's learned default user vector)."""
        return self.contexts.cold(user_id)

    def user_context(self, user_id: str | None) -> tuple[UserContext, bool]:
        """(the user's context, cache hit?); unknown or absent users get the cold-start context."""
        return self.contexts.get(user_id, self.snapshot.version, self.plugin_snapshot)

    def private_context(self, emb: torch.Tensor, persona: str | None, stats: list[float] | None) -> UserContext:
        """A privacy-mode request's context (`UserContexts.private`)."""
        return self.contexts.private(emb, persona, stats, self.plugin_snapshot)

    def invalidate(self, user_id: str) -> int:
        """Drop a user's cached context (after erasure; other changes already change the key)."""
        return self.contexts.invalidate(user_id)

    def plugin_state(self, items: list[dict]) -> Any:
        """The served plug-in's state for a history (a LoRA hub: the adapters its persona text retrieves)."""
        return self.plugin.state_for_history(items)

    # --- rows and batches ---

    def prepare(self, input_text: str, ctx: UserContext, max_new_tokens: int | None = None) -> Row:
        """The row of one request (`pplug.serve.contexts.prepare_row`)."""
        return prepare_row(self.snapshot, self.spec, self.encoder, input_text, ctx, max_new_tokens)

    def _soft_prompts(self, model: PPlugModel, rows: list[Row]
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, list[int]]:
        """One embedder call for rows of many users: (their soft prompts (B, P, D), the history statistics (B, S)
        the embedder and the history prior read (None when neither does), the labels of the past items weighted
        by likeness (B, C) of `history_mix_prior` "encoder" / "attention" (else None), the history items each row
        read)."""
        n_max = model.config.max_history
        kept = [r.ctx.emb[-n_max:] for r in rows]  # each (N_i, d_enc), N_i <= max_history
        n = max((int(e.shape[0]) for e in kept), default=0)
        emb = torch.zeros(len(rows), n, self.encoder.dim)  # (B, N, d_enc)
        mask = torch.zeros(len(rows), n, dtype=torch.bool)  # (B, N)
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
        prior = model.history_prior_from(emb, mask, q_in if q_in is not None else queries, labels,
                                         encode=self.encoder.encode_uncached) \
            if model.config.mixes_item_prior else None  # (B, C): the rows carry no history texts
        return prefix, stats, prior, [int(e.shape[0]) for e in kept]

    @torch.no_grad()
    def run_batch(self, rows: list[Row]) -> list[dict]:
        """Outputs for rows of possibly different users: one embedder call, one LLM pass per generation budget."""
        self.maybe_reload()
        snap, psnap, spec = self.snapshot, self.plugin_snapshot, self.spec
        model, llm = snap.model, snap.model.llm
        prefix, stats, prior, n_items = self._soft_prompts(model, rows)  # (B, P, D), (B, S) or None, (B, C) or None
        outs: list[dict] = [{} for _ in rows]
        if spec.labels:
            groups = {None: list(range(len(rows)))}
        else:
            groups: dict[int | None, list[int]] = {}
            for i, r in enumerate(rows):
                groups.setdefault(r.max_new_tokens or spec.max_new_tokens, []).append(i)
        states = [row_state(r.ctx, psnap) for r in rows] if psnap is not None else None
        for budget, idx in groups.items():
            prompted = PrefixedModel(model, prefix[idx], self.generator, prior[idx] if prior is not None else None)
            batch = PPlugBatch([rows[i].prompt for i in idx], [rows[i].query for i in idx], [[] for _ in idx],
                               history_stats=stats[idx].tolist() if stats is not None else None)
            probs = None
            with (psnap.plugin.run_rows([states[i] for i in idx]) if states else contextlib.nullcontext()):
                if spec.labels:  # scored as `decode` scores them, and the distribution is part of the reply
                    probs = prompted.choice_logprobs(batch, list(spec.labels)).float().cpu().softmax(dim=-1)  # (b, C)
                    texts = decode_labels(spec, probs, [snap.decoding])[snap.decoding]
                else:
                    texts = decode(prompted, spec, batch, decoding=snap.decoding, max_new_tokens=budget)
            for j, i in enumerate(idx):
                outs[i] = {"text": texts[j], "history_items": n_items[i],
                           "label_probs": ({lab: float(p) for lab, p in zip(spec.labels, probs[j])}
                                           if probs is not None else None)}
        n_prompt = [len(ids) for ids in llm.prompt_ids([r.prompt for r in rows])]
        for i, o in enumerate(outs):
            if self.expose_soft_prompts:
                o["soft_prompt"] = prefix[i].float().cpu().tolist()
            if states:  # what the plug-in says of the row (a hub: its adapters), and the version that served it
                o["plugin"] = psnap.plugin.describe(states[i])
                o["plugin_version"] = {f"{psnap.name}_version": psnap.version}
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

    async def call(self, fn: Any) -> Any:
        """Run `fn()` on the engine thread, alone, between batches, and wait for its result (raises what it raised).

        For work that runs the served model outside a batch (`POST /v1/explain`): only the engine thread touches
        the LLM and its tokenizer, whose fast tokenizer must not be used from two threads at once."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put((_Call(fn), loop, fut))
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
            calls = [item for item in items if isinstance(item[0], _Call)]
            rows = [item for item in items if not isinstance(item[0], _Call)]
            results = self._run([row for row, _, _ in rows]) if rows else []
            for (_, loop, fut), res in zip(rows, results):
                loop.call_soon_threadsafe(_settle, fut, res)
            for job, loop, fut in calls:
                try:
                    res = job.fn()
                except Exception as e:  # the caller gets it, the engine thread goes on
                    res = e
                loop.call_soon_threadsafe(_settle, fut, res)


class _Call:
    """A job for the engine thread (`Batcher.call`), queued beside the rows."""

    def __init__(self, fn: Any):
        self.fn = fn


def _settle(fut: asyncio.Future, res: Any) -> None:
    if fut.done():  # the client went away
        return
    if isinstance(res, BaseException):
        fut.set_exception(res)
    else:
        fut.set_result(res)


__all__ = ["Batcher", "Engine", "PluginSnapshot", "Row", "Snapshot", "UserContext"]
