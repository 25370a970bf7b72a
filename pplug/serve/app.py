"""`pplug serve`: an OpenAI-compatible HTTP server, one frozen LLM personalising outputs for many users.

    GET  /health                         no key: status, served version (and hub version), engine (hf / vllm),
                                         batching counters
    GET  /v1/models                      the served model (id = --model-name, default "pplug-<run folder>")
    POST /v1/completions                 OpenAI completions; `user` picks the user whose history personalises
    POST /v1/chat/completions            OpenAI chat; the input is the last "user" message's content
    POST /v1/users                       admin: create a user -> that user's API key (shown once)
    GET  /v1/users                       admin: list users
    GET  /v1/users/{id}                  admin or the user: persona, version, history counts
    POST /v1/users/{id}/history          admin or the user: append history items (takes effect at the next request)
    DELETE /v1/users/{id}                admin or the user: erasure; the reply says what was removed

Keys (`Authorization: Bearer <key>`): the admin key (`--admin-key` or $PPLUG_ADMIN_KEY) manages users and may
generate for any `user`; a user key (created with the user; the store keeps only its sha256) reaches only
that user's data and generates only for that user. An unknown `user` (admin key) or a user without history
is a cold start: the checkpoint's learned default user vector, said in the reply's `pplug.cold_start`.
Instead of `user`, a request may carry `user_vector` (privacy mode, see `pplug.serve.privacy`). With `--hub`, a stored
user's adapters are retrieved from the persona text of their history, a `user_vector`'s from the `persona` text
it carries (none: the general adapter); replies say which hub version served them (`pplug.hub_version`), and a
promoted hub version is picked up without a restart, as checkpoint versions are.

Outputs are task-aware: the checkpoint's task decides the prompt (plain content is wrapped in the task's
instruction) and the decoding (labels and ratings are scored, ratings with the checkpoint's decoding;
generation is greedy, the first line kept). Sampling parameters (temperature, top_p, ...) are accepted and
ignored: outputs are deterministic. Every error is a 4xx/5xx JSON body in OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`, and a rejected request changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .schema import (
    APIError,
    ChatBody,
    CompletionBody,
    CreateUserBody,
    GenerateBody,
    HistoryBody,
    Limits,
    error_response,
)
from pplug.adapt.fast import AdaptError, add_history
from pplug.persona.schema import PersonaError
from .privacy import parse_user_vector
from .batching import Batcher, Engine, UserContext
from pplug.store.schema import DuplicateUserError, StoreError, UnknownUserError
from pplug.store.base import UserStoreBase
from pplug.store import open_store
from pplug.core.tasks import get_task
from pplug.store.validation import InvalidInputError, check_items, check_user_id, item_json_schema

USER_KEY_PREFIX = "pplug-u-"


def hash_key(key: str) -> str:
    """sha256 hex of an API key (what the store keeps)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# --- the app ---


def erase_user(store: UserStoreBase, user_id: str, encoder: Any) -> dict[str, int]:
    """Erasure across the store and the embedding cache; returns counts of what was removed.

    Cached embeddings of the user's history texts are deleted unless another user has the same text (then
    kept and counted under "embedding_cache_kept_shared"). Cache deletes run first: should the store
    transaction then fail, the cache is merely colder, and the user can be erased again.
    """
    def texts(rows) -> set[str]:
        out = set()
        for r in rows:  # the same text the item was embedded from (see add_history / backfill_memory)
            try:
                out.add(get_task(r.task).history_text(r.item) if r.task else json.dumps(r.item, sort_keys=True))
            except (ValueError, KeyError):
                continue
        return out

    mine = texts(store.history(user_id))
    shared = mine & texts(r for r in store.interactions_since(0) if r.user_id != user_id)  # a scan: erasure is rare
    cache_rows = encoder.forget(sorted(mine - shared))
    counts = store.delete_user(user_id)
    return {**counts, "embedding_cache_rows": cache_rows, "embedding_cache_kept_shared": len(shared)}


def create_app(checkpoint: str | os.PathLike, store: str | os.PathLike | UserStoreBase, admin_key: str | None = None,
               device: str = "auto", max_batch: int = 32, window_ms: float = 10.0, reload_interval: float = 1.0,
               model_name: str | None = None, embedding_cache: Any = None, limits: Limits | None = None,
               expose_soft_prompts: bool = False, hub: str | os.PathLike | None = None, llm_engine: str = "hf",
               vllm_args: dict | None = None) -> FastAPI:
    """The server app (load the model once; `uvicorn.run(app)` serves it).

    Args:
        checkpoint: run folder (serves LATEST, picks up new promotions) or a checkpoint folder.
        store: a user store, or its `--store` value (a SQLite path, created if missing, or a postgresql://
            URL: several replicas may share one database, see `pplug.store.postgres`).
        admin_key: the admin API key (default $PPLUG_ADMIN_KEY; neither -> ValueError).
        device: "auto" or a torch device.
        max_batch, window_ms: dynamic batching (max_batch=1: unbatched).
        reload_interval: seconds between checks of LATEST.
        model_name: the model id clients pass (default "pplug-<run folder name>").
        embedding_cache: the history encoder's cache file (None: the shared pplug cache).
        limits: request bounds.
        expose_soft_prompts: replies carry `pplug.soft_prompt` (the P x D prompt each input got); for tests and
            debugging only.
        hub: a LoRA hub folder or hub run folder: each row also runs through its user's retrieved adapters
            (`pplug+lora-hub`); replies name them (`pplug.adapters`) and the hub version (`pplug.hub_version`),
            and history uploads say which adapters the user retrieves before and after (`adapters`). A hub run
            folder's LATEST is checked with the checkpoint's (`reload_interval`).
        llm_engine: "hf" (everything on the HF model) or "vllm" (generation on vLLM from the same soft prompts,
            label scoring on the HF model; see `pplug.serve.vllm`).
        vllm_args: more `vllm.LLM` arguments for llm_engine="vllm" (e.g. {"enforce_eager": True}).
    """
    admin_key = admin_key or os.environ.get("PPLUG_ADMIN_KEY")
    if not admin_key:
        raise ValueError("pplug serve needs an admin key: pass --admin-key or set PPLUG_ADMIN_KEY")
    limits = limits or Limits()
    if llm_engine not in ("hf", "vllm"):
        raise ValueError(f"llm_engine must be 'hf' or 'vllm', got {llm_engine!r}")
    if llm_engine == "vllm":  # a missing vLLM is one line before the store, the checkpoint or any model is touched
        from .vllm import require_vllm

        require_vllm()
    store = store if isinstance(store, UserStoreBase) else open_store(store)
    engine = Engine(checkpoint, store, device=device, reload_interval=reload_interval, embedding_cache=embedding_cache,
                    expose_soft_prompts=expose_soft_prompts, hub=hub)
    if llm_engine == "vllm":
        from .vllm import attach

        attach(engine, **(vllm_args or {}))
    batcher = Batcher(engine, max_batch=max_batch, window_ms=window_ms)
    root = Path(checkpoint).resolve()
    name = model_name or f"pplug-{(root.parent if root.name == engine.snapshot.version else root).name}"
    started = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="pplug", lifespan=lifespan)
    app.state.engine, app.state.batcher, app.state.store = engine, batcher, store
    routes_schema = app.openapi

    def openapi() -> dict:
        """The OpenAPI document, its history items described for the served task (what clients may send)."""
        doc = routes_schema()  # built once and cached by FastAPI; the edit below is the same every time
        doc["components"]["schemas"]["HistoryBody"]["properties"]["items"]["items"] = item_json_schema(engine.spec)
        return doc

    app.openapi = openapi

    # --- errors: every reply in OpenAI's shape ---

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return error_response(e.status, e.message, e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            return error_response(400, "request body is not valid JSON", "invalid_request_error", None, "invalid_json")
        param = ".".join(loc) or None
        return error_response(400, f"{param or 'body'}: {err.get('msg', 'invalid')}", "invalid_request_error", param,
                               "missing_field" if err.get("type") == "missing" else "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), "invalid_request_error", None,
                               "not_found" if e.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        print(f"pplug serve: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return error_response(500, f"internal error: {type(e).__name__}", "server_error", None, None)

    @app.middleware("http")
    async def _body_limit(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            return error_response(413, f"request body of {size} bytes is over the limit of {limits.max_body_bytes}",
                                   "invalid_request_error", None, "request_too_large")
        return await call_next(request)

    # --- auth ---

    def principal(request: Request) -> str | None:
        """None for the admin, else the user id the key belongs to (401 otherwise)."""
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", "invalid_request_error",
                           None, "invalid_api_key")
        key = key.strip()
        if hmac.compare_digest(key.encode(), admin_key.encode()):
            return None
        uid = store.user_for_api_key_hash(hash_key(key)) if key.startswith(USER_KEY_PREFIX) else None
        if uid is None:
            raise APIError(401, "invalid API key", "invalid_request_error", None, "invalid_api_key")
        return uid

    def invalid(e: InvalidInputError) -> APIError:
        return APIError(400, str(e), "invalid_request_error", e.param, e.code)

    def require_access(who: str | None, user_id: str) -> None:
        if who is not None and who != user_id:  # same reply whether the other user exists or not
            raise APIError(403, f"this key may not access user {user_id!r}", "permission_error", None, "permission_denied")
        try:  # only the admin gets this far with another id: a bad one is named, never looked up
            check_user_id(user_id)
        except InvalidInputError as e:
            raise invalid(e) from None

    def require_admin(who: str | None) -> None:
        if who is not None:
            raise APIError(403, "this needs the admin key", "permission_error", None, "permission_denied")

    def require_user(user_id: str) -> None:
        if not store.has_user(user_id):
            raise APIError(404, f"unknown user {user_id!r}", "invalid_request_error", "user_id", "user_not_found")

    # --- info ---

    @app.get("/health")
    async def health():
        snap = engine.snapshot
        return {"status": "ok", "model": name, "version": snap.version, "hub_version": engine.hub_version,
                "task": engine.spec.name,
                "device": str(engine.device), "max_batch": batcher.max_batch, "window_ms": batcher.window * 1000,
                "engine": dict(engine.engine_info), "stats": dict(engine.stats)}

    @app.get("/v1/models")
    async def models(request: Request):
        principal(request)
        snap = engine.snapshot
        return {"object": "list", "data": [{"id": name, "object": "model", "created": started, "owned_by": "pplug",
                                            "pplug": {"version": snap.version, "task": engine.spec.name,
                                                      "method": snap.method + ("+lora-hub" if engine.hub else ""),
                                                      "hub_version": engine.hub_version,
                                                      "decoding": snap.decoding}}]}

    # --- generation ---

    def context_for(who: str | None, body: GenerateBody) -> tuple[UserContext, bool]:
        if body.model != name:
            raise APIError(404, f"model {body.model!r} does not exist; this server serves {name!r}",
                           "invalid_request_error", "model", "model_not_found")
        if body.stream:
            raise APIError(400, "stream=true is not supported", "invalid_request_error", "stream", "unsupported")
        if body.n != 1:
            raise APIError(400, "n must be 1 (outputs are deterministic)", "invalid_request_error", "n", "unsupported")
        if body.user_vector is not None:
            if body.user is not None:
                raise APIError(400, "send either user or user_vector, not both", "invalid_request_error", "user_vector")
            snap = engine.snapshot
            if snap.model.config.reads_history_labels:  # the label of each item is what privacy mode never sends
                raise APIError(400, "this checkpoint reads the label of each history item (label_token), which a "
                               "user_vector does not carry: send a stored user id", "invalid_request_error",
                               "user_vector", "unsupported")
            try:
                stats_dim = engine.spec.stats_dim if snap.model.config.reads_history_stats else None
                emb, stats = parse_user_vector(body.user_vector, engine.encoder.identity, engine.encoder.dim,
                                               engine.spec.name, snap.model.config.max_history, stats_dim)
            except ValueError as e:
                raise APIError(400, str(e), "invalid_request_error", "user_vector", "invalid_value") from None
            persona = body.user_vector.get("persona") or None
            return engine.private_context(emb, persona, stats), False
        user = body.user if body.user is not None else who
        if body.user is not None:
            try:
                check_user_id(body.user, param="user")
            except InvalidInputError as e:
                raise invalid(e) from None
        if who is not None and user != who:
            raise APIError(403, "a user key generates only for its own user", "permission_error", "user",
                           "permission_denied")
        return engine.user_context(user)

    async def generate(request: Request, body: GenerateBody, inputs: list[str], max_tokens: int | None) -> tuple:
        who = principal(request)
        if not inputs or len(inputs) > limits.max_prompts:
            raise APIError(400, f"between 1 and {limits.max_prompts} prompts per request", "invalid_request_error", "prompt")
        for x in inputs:
            if not x.strip():
                raise APIError(400, "the input is empty", "invalid_request_error", "prompt", "invalid_value")
            if len(x) > limits.max_input_chars:
                raise APIError(400, f"input of {len(x)} characters is over the limit of {limits.max_input_chars}",
                               "invalid_request_error", "prompt", "input_too_large")
        if max_tokens is not None and max_tokens > limits.max_new_tokens:
            raise APIError(400, f"max_tokens {max_tokens} is over the limit of {limits.max_new_tokens}",
                           "invalid_request_error", "max_tokens", "invalid_value")
        ctx, hit = await run_in_threadpool(context_for, who, body)
        rows = [await run_in_threadpool(engine.prepare, x, ctx, max_tokens) for x in inputs]
        outs = await asyncio.gather(*(batcher.submit(r) for r in rows))
        meta = {"user": ctx.user_id, "private": ctx.private, "cold_start": ctx.cold_start,
                "history_items": outs[0]["history_items"], "version": outs[0]["version"], "task": engine.spec.name,
                "decoding": outs[0]["decoding"], "batch_size": [o["batch_size"] for o in outs], "context_cache_hit": hit,
                "label_probs": [o["label_probs"] for o in outs] if engine.spec.labels else None}
        if engine.expose_soft_prompts:
            meta["soft_prompt"] = [o["soft_prompt"] for o in outs]
        if engine.hub is not None:  # each input's adapters and their weights, and the hub version they came from
            meta["adapters"] = [o["adapters"] for o in outs]
            meta["hub_version"] = outs[0]["hub_version"]
        usage = {"prompt_tokens": sum(o["prompt_tokens"] for o in outs),
                 "completion_tokens": sum(o["completion_tokens"] for o in outs)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return outs, meta, usage

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionBody):
        inputs = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        outs, meta, usage = await generate(request, body, inputs, body.max_tokens)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": name, "choices": [{"text": o["text"], "index": i, "logprobs": None, "finish_reason": "stop"}
                                           for i, o in enumerate(outs)],
                "usage": usage, "pplug": meta}

    @app.post("/v1/chat/completions")
    async def chat(request: Request, body: ChatBody):
        users = [m for m in body.messages if m.role == "user"]
        if not users:
            raise APIError(400, "messages: no message with role 'user'", "invalid_request_error", "messages")
        content = users[-1].content
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
        outs, meta, usage = await generate(request, body, [content or ""], body.max_completion_tokens or body.max_tokens)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": [{"index": 0, "message": {"role": "assistant", "content": outs[0]["text"]},
                                            "finish_reason": "stop", "logprobs": None}],
                "usage": usage, "pplug": meta}

    # --- users ---

    @app.post("/v1/users", status_code=201)
    async def create_user(request: Request, body: CreateUserBody):
        require_admin(principal(request))
        key = USER_KEY_PREFIX + secrets.token_urlsafe(24)

        try:
            check_user_id(body.user_id)
            task = get_task(body.task or engine.spec.name).name
        except InvalidInputError as e:
            raise invalid(e) from None
        except ValueError as e:
            raise APIError(400, str(e), "invalid_request_error", "task", "invalid_value") from None

        def work():
            try:
                store.create_user(body.user_id, body.persona, task=task)
            except DuplicateUserError as e:
                raise APIError(409, str(e), "invalid_request_error", "user_id", "user_exists") from None
            except InvalidInputError as e:
                raise invalid(e) from None
            except (StoreError, PersonaError, ValueError) as e:
                raise APIError(400, str(e), "invalid_request_error", "persona", "invalid_value") from None
            store.set_api_key_hash(body.user_id, hash_key(key))
            return store.user_task(body.user_id)

        task = await run_in_threadpool(work)
        return {"object": "user", "user_id": body.user_id, "task": task, "persona_version": 1, "api_key": key}

    @app.get("/v1/users")
    async def list_users(request: Request):
        require_admin(principal(request))
        return {"object": "list", "data": await run_in_threadpool(store.users)}

    @app.get("/v1/users/{user_id}")
    async def show_user(request: Request, user_id: str):
        require_access(principal(request), user_id)

        def work():
            require_user(user_id)
            return {"object": "user", "user_id": user_id, "task": store.user_task(user_id),
                    "history": store.count_by_task(user_id), "persona_version": store.persona_version(user_id),
                    "persona": store.persona(user_id).to_dict()}

        return await run_in_threadpool(work)

    @app.post("/v1/users/{user_id}/history")
    async def post_history(request: Request, user_id: str, body: HistoryBody):
        require_access(principal(request), user_id)
        if not body.items:
            raise APIError(400, "items: empty list", "invalid_request_error", "items", "invalid_value")
        if len(body.items) > limits.max_history_items:
            raise APIError(400, f"items: {len(body.items)} items, at most {limits.max_history_items} per request",
                           "invalid_request_error", "items", "history_too_large")

        def work():
            require_user(user_id)
            task = store.user_task(user_id) or engine.spec.name
            try:  # every item checked before the first write (add_history checks again, under the store's limit)
                items = check_items(body.items, task, max_item_chars=limits.max_item_chars)
                with engine.encoder_lock:
                    before = engine.retrieval(store.history_items(user_id, task=task)) if engine.hub else None
                    res = add_history(store, user_id, items, engine.encoder, task=task)
                    after = engine.retrieval(store.history_items(user_id, task=task)) if engine.hub else None
            except InvalidInputError as e:
                raise invalid(e) from None
            except (AdaptError, UnknownUserError, StoreError, ValueError) as e:
                raise APIError(400, str(e), "invalid_request_error", "items", "invalid_value") from None
            return {"object": "history", "user_id": user_id, "added": len(res.ids), "ids": res.ids,
                    "history_items": store.count_interactions(user_id), "persona_version": res.persona_version,
                    "persona_diff": res.diff,
                    **({"adapters": {"before": before.adapters, "after": after.adapters,
                                     "weights": {"before": before.weights, "after": after.weights}}}
                       if engine.hub else {})}

        return await run_in_threadpool(work)

    @app.delete("/v1/users/{user_id}")
    async def delete_user(request: Request, user_id: str):
        require_access(principal(request), user_id)

        def work():
            require_user(user_id)
            with engine.encoder_lock:  # no request can re-cache the user's texts or context meanwhile
                removed = erase_user(store, user_id, engine.encoder)
                removed["soft_prompt_cache_entries"] = engine.invalidate(user_id)
            return {"object": "user.deleted", "user_id": user_id, "deleted": True, "removed": removed}

        return await run_in_threadpool(work)

    return app


__all__ = ["APIError", "Limits", "create_app", "erase_user", "hash_key"]
