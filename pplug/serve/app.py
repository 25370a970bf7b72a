"""`pplug serve`: an OpenAI-compatible HTTP server, one frozen LLM personalising outputs for many users.

    GET  /health                         no key: status, served version (and hub version), engine (hf / vllm),
                                         batching counters
    GET  /v1/models                      the served model (id = --model-name, default "pplug-<run folder>")
    POST /v1/completions                 OpenAI completions; `user` picks the user whose history personalises
    POST /v1/chat/completions            OpenAI chat; the input is the last "user" message's content
    POST /v1/rank                        admin: one input for many stored users (each user's output, label
                                         distribution); users of one batch share the prompt's prefill
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

`create_app` builds the app (errors, the body limit) from the routers of `pplug.serve.routes_info`,
`pplug.serve.routes_generate` and `pplug.serve.routes_users`; the key of a request and the state the routes
share are the dependencies of `pplug.serve.access`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pplug.persona.schema import PersonaError
from pplug.store import open_store
from pplug.store.base import UserStoreBase
from pplug.store.validation import item_json_schema

from . import page, routes_explain, routes_generate, routes_info, routes_users
from .access import ServerState
from .batching import Batcher, Engine
from .schema import APIError, Limits, error_response


def create_app(checkpoint: str | os.PathLike, store: str | os.PathLike | UserStoreBase, admin_key: str | None = None,
               device: str = "auto", max_batch: int = 32, window_ms: float = 10.0, reload_interval: float = 1.0,
               model_name: str | None = None, embedding_cache: Any = None, limits: Limits | None = None,
               expose_soft_prompts: bool = False, plugins: Mapping[str, str | os.PathLike] | None = None,
               llm_engine: str = "hf", vllm_args: dict | None = None) -> FastAPI:
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
        plugins: at most one method plug-in name -> its folder. `{"hub": DIR}` (`--hub DIR`): a LoRA hub folder
            or hub run folder: each row also runs through its user's retrieved adapters (`pplug+lora-hub`);
            replies name them (`pplug.adapters`) and the hub version (`pplug.hub_version`), and history uploads
            say which adapters the user retrieves before and after (`adapters`). A run folder's LATEST is
            checked with the checkpoint's (`reload_interval`).
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
                    expose_soft_prompts=expose_soft_prompts, plugins=plugins)
    if llm_engine == "vllm":
        from .vllm import attach

        attach(engine, **(vllm_args or {}))
    batcher = Batcher(engine, max_batch=max_batch, window_ms=window_ms)
    root = Path(checkpoint).resolve()
    name = model_name or f"pplug-{(root.parent if root.name == engine.snapshot.version else root).name}"

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="pplug", lifespan=lifespan)
    app.state.server = ServerState(store, engine, batcher, limits, admin_key, name, int(time.time()))
    app.state.engine, app.state.batcher, app.state.store = engine, batcher, store
    for group in (routes_info, routes_generate, routes_users, routes_explain, page):
        app.include_router(group.router)
    routes_schema = app.openapi

    def openapi() -> dict:
        """The OpenAPI document, its history items described for the served task (what clients may send)."""
        doc = routes_schema()  # built once and cached by FastAPI; the edit below is the same every time
        doc["components"]["schemas"]["HistoryBody"]["properties"]["items"]["items"] = item_json_schema(engine.spec)
        return doc

    app.openapi = openapi
    _answer_errors_in_openai_shape(app, limits)
    return app


def _answer_errors_in_openai_shape(app: FastAPI, limits: Limits) -> None:
    """Every error reply in OpenAI's shape, and bodies over `limits.max_body_bytes` refused (`BodyLimit`)."""

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

    @app.exception_handler(PersonaError)
    async def _stored_persona(request, e: PersonaError):  # a body's persona is refused in its route (400): this
        user = request.path_params.get("user_id", "")    # one was read from the store, written by an older version
        return error_response(409, f"{e}; erase the user (DELETE /v1/users/{user}) and create it again",
                              "invalid_request_error", f"persona.{e.field}" if e.field else "persona",
                              "stored_persona_invalid")

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        print(f"pplug serve: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return error_response(500, f"internal error: {type(e).__name__}", "server_error", None, None)

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets a 413 in OpenAI's shape and never reaches the app.

    It counts the bytes actually received, so a chunked or streamed body (no Content-Length) is bounded like
    any other; a declared Content-Length over the limit is refused before anything is read. The body is read
    up to the limit before the app runs and handed to it whole: no route starts work, and no write happens,
    for a body that turns out too large.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _refuse(self, size: str) -> Any:
        return error_response(413, f"request body of {size} bytes is over the limit of {self.max_bytes}",
                              "invalid_request_error", None, "request_too_large")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(declared)(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the client left before sending its body: no one to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(f"more than {self.max_bytes}")(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the client's disconnect, as the app expects

        await self.app(scope, replay, send)


__all__ = ["APIError", "BodyLimit", "Limits", "create_app"]
