"""`pplug serve`'s routes for the person behind a user id: who a key is (`GET /v1/whoami`), the user's stored
history items (`GET /v1/users/{id}/history`) and why the user gets their output (`POST /v1/explain`).

The access rules are the API's: a user key reaches only its own user, the admin key any user; an unknown or
erased user is a 404 for the admin and, since erasure deletes the key, a 401 for the user's own key.

`POST /v1/explain` runs `pplug.decode.explain.explain` on the served checkpoint for one input and a stored
user: the weight of each history item the embedder read, the statistics it read, and the output with the
user's history, with none (cold start) and with the persona text alone. It runs on the engine thread between
batches (`Batcher.call`: only that thread runs the LLM and its tokenizer), holding the engine's `encoder_lock`
(the history texts go through the embedding cache, as context building does); the input itself is embedded
uncached, like every request's. With a method plug-in served (`--hub`), rows would run through per-row
adapters that this route does not set up, so it refuses.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from pplug.decode.explain import explain
from pplug.lamp.data import Example
from pplug.methods.registry import get_method
from pplug.store.schema import UnknownUserError

from .access import Caller, ServerState, State, require_access
from .routes_users import require_user
from .schema import APIError, _Body

router = APIRouter()

MAX_HISTORY_PAGE = 1000
"""Items one `GET /v1/users/{id}/history` reply holds at most (`limit`)."""


class ExplainBody(_Body):
    """`POST /v1/explain`: one input, for the key's own user (or, with the admin key, `user`)."""

    model: str
    input: str
    user: str | None = None
    top: int = Field(5, ge=0, le=100)


def privacy(state: ServerState) -> dict:
    """What the page tells a user of their privacy mode: a stored user's history lives on the server; privacy
    mode (a `user_vector` per request, `pplug embed-user`) keeps it on the user's side where the checkpoint
    allows it (not with `label_token`, which reads each item's label)."""
    config = state.engine.snapshot.model.config
    return {"mode": "stored", "history_on_server": True, "user_vector_accepted": not config.reads_history_labels}


@router.get("/v1/whoami")
async def whoami(state: State, who: Caller):
    """The key's identity: the admin, or the user it belongs to."""
    return {"object": "whoami", "admin": who is None, "user_id": who, "model": state.model_name,
            "task": state.engine.spec.name}


@router.get("/v1/users/{user_id}/history")
async def list_history(state: State, who: Caller, user_id: str, limit: int = 100):
    """The user's most recent `limit` history items of every task, oldest first, with their ids and times."""
    require_access(who, user_id)
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise APIError(400, f"limit must be 1 to {MAX_HISTORY_PAGE}, got {limit}", "invalid_request_error", "limit",
                       "invalid_value")
    store = state.store

    def work():
        require_user(state, user_id)
        try:
            rows = store.history(user_id, limit=limit)
            total = store.count_interactions(user_id)
        except UnknownUserError:  # erased between the check and the read
            require_user(state, user_id)
            raise
        return {"object": "list", "user_id": user_id, "total": total, "privacy": privacy(state),
                "data": [{"id": r.id, "created_at": r.created_at, "task": r.task, "item": r.item} for r in rows]}

    return await run_in_threadpool(work)


@router.post("/v1/explain")
async def explain_route(state: State, who: Caller, body: ExplainBody):
    """Why the user gets their output for `input` (see the module docstring)."""
    engine, limits = state.engine, state.limits
    if body.model != state.model_name:
        raise APIError(404, f"model {body.model!r} does not exist; this server serves {state.model_name!r}",
                       "invalid_request_error", "model", "model_not_found")
    user = body.user if body.user is not None else who
    if user is None:
        raise APIError(400, "user: the admin key explains a stored user: send 'user'", "invalid_request_error",
                       "user", "missing_field")
    require_access(who, user)
    if not body.input.strip() or len(body.input) > limits.max_input_chars:
        raise APIError(400, f"the input must be 1 to {limits.max_input_chars} characters", "invalid_request_error",
                       "input", "invalid_value")
    snap = engine.snapshot
    if not get_method(snap.method).use_user_embedding:
        raise APIError(400, f"the served method '{snap.method}' has no user embedding: there are no history weights "
                       "to explain", "invalid_request_error", None, "unsupported")
    if engine.plugin is not None:
        raise APIError(400, f"explain covers the user embedding of a checkpoint served alone; this server serves "
                       f"'{engine.served_method}' with per-row adapters", "invalid_request_error", None, "unsupported")
    spec = engine.spec

    def context() -> tuple[Example, str | None]:
        require_user(state, user)
        ctx, _ = engine.user_context(user)
        text = body.input if any(m in body.input for m in spec.query_markers) else spec.make_input(body.input)
        return Example("explain", text, list(ctx.items), user_id=user), ctx.persona

    def work(example: Example, persona: str | None) -> dict:
        with engine.encoder_lock:
            if not state.store.has_user(user):  # erased meanwhile: nothing of theirs is embedded again
                require_user(state, user)
            (row,) = explain(snap.model, [example], personas=[persona], decoding=snap.decoding, top=body.top,
                             query_encoder=engine.encoder.encode_uncached)
        return row

    example, persona = await run_in_threadpool(context)
    row = await state.batcher.call(lambda: work(example, persona))
    return {"object": "pplug.explanation", "model": state.model_name, "user": user, "version": snap.version,
            "privacy": privacy(state), **{k: v for k, v in row.items() if k != "id"}}


__all__ = ["ExplainBody", "explain_route", "list_history", "privacy", "router", "whoami"]
