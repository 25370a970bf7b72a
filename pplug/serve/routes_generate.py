"""`pplug serve`'s generation routes, OpenAI's: `POST /v1/completions` and `POST /v1/chat/completions`; and
pplug's own `POST /v1/rank`: one input for many users.

A request's `user` (or, in privacy mode, its `user_vector`) picks whose history personalises the outputs; a
user key generates only for its own user. The checks come first, then the user's context (cached), then one
row per input, queued for the batcher; the reply carries what served it under `pplug`. `/v1/rank` (admin key)
queues one row per user for the same input: rows of one batch share their prompt, so with a checkpoint whose
soft prompt comes after the prompt (`soft_prompt_position: after_prompt`) a batch of users pays one prefill.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from pplug.store.validation import InvalidInputError, check_user_id

from .access import Caller, ServerState, State, invalid, require_admin
from .contexts import UserContext
from .privacy import parse_user_vector
from .schema import APIError, ChatBody, CompletionBody, GenerateBody, RankBody

router = APIRouter()


def context_for(state: ServerState, who: str | None, body: GenerateBody) -> tuple[UserContext, bool]:
    """(the context the request generates for, cache hit?), after the checks of the body's fields."""
    engine = state.engine
    if body.model != state.model_name:
        raise APIError(404, f"model {body.model!r} does not exist; this server serves {state.model_name!r}",
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
            raise APIError(400, "this checkpoint reads the label of each history item "
                           "(label_token, history_mix_prior: attention), which a "
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


async def generate(state: ServerState, who: str | None, body: GenerateBody, inputs: list[str],
                   max_tokens: int | None) -> tuple[list[dict], dict, dict]:
    """(one batcher output per input, the reply's `pplug` metadata, the reply's `usage`)."""
    engine, limits = state.engine, state.limits
    if not inputs or len(inputs) > limits.max_prompts:
        raise APIError(400, f"between 1 and {limits.max_prompts} prompts per request", "invalid_request_error",
                       "prompt")
    for x in inputs:
        if not x.strip():
            raise APIError(400, "the input is empty", "invalid_request_error", "prompt", "invalid_value")
        if len(x) > limits.max_input_chars:
            raise APIError(400, f"input of {len(x)} characters is over the limit of {limits.max_input_chars}",
                           "invalid_request_error", "prompt", "input_too_large")
    if max_tokens is not None and max_tokens > limits.max_new_tokens:
        raise APIError(400, f"max_tokens {max_tokens} is over the limit of {limits.max_new_tokens}",
                       "invalid_request_error", "max_tokens", "invalid_value")
    ctx, hit = await run_in_threadpool(context_for, state, who, body)
    rows = [await run_in_threadpool(engine.prepare, x, ctx, max_tokens) for x in inputs]
    outs = await asyncio.gather(*(state.batcher.submit(r) for r in rows))
    meta = {"user": ctx.user_id, "private": ctx.private, "cold_start": ctx.cold_start,
            "history_items": outs[0]["history_items"], "version": outs[0]["version"], "task": engine.spec.name,
            "decoding": outs[0]["decoding"], "batch_size": [o["batch_size"] for o in outs], "context_cache_hit": hit,
            "label_probs": [o["label_probs"] for o in outs] if engine.spec.labels else None}
    if engine.expose_soft_prompts:
        meta["soft_prompt"] = [o["soft_prompt"] for o in outs]
    if engine.plugin is not None:  # what the plug-in says of each input (a hub: its adapters), and its version
        meta.update({key: [o["plugin"][key] for o in outs] for key in outs[0]["plugin"]})
        meta.update(outs[0]["plugin_version"])
    usage = {"prompt_tokens": sum(o["prompt_tokens"] for o in outs),
             "completion_tokens": sum(o["completion_tokens"] for o in outs)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return outs, meta, usage


@router.post("/v1/completions")
async def completions(state: State, who: Caller, body: CompletionBody):
    inputs = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    outs, meta, usage = await generate(state, who, body, inputs, body.max_tokens)
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": state.model_name, "choices": [{"text": o["text"], "index": i, "logprobs": None,
                                                    "finish_reason": "stop"} for i, o in enumerate(outs)],
            "usage": usage, "pplug": meta}


@router.post("/v1/chat/completions")
async def chat(state: State, who: Caller, body: ChatBody):
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        raise APIError(400, "messages: no message with role 'user'", "invalid_request_error", "messages")
    content = users[-1].content
    if isinstance(content, list):  # OpenAI content parts: keep the text parts
        content = "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    outs, meta, usage = await generate(state, who, body, [content or ""], body.max_completion_tokens or body.max_tokens)
    message = {"role": "assistant", "content": outs[0]["text"]}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": state.model_name, "choices": [{"index": 0, "message": message, "finish_reason": "stop",
                                                    "logprobs": None}],
            "usage": usage, "pplug": meta}


@router.post("/v1/rank")
async def rank(state: State, who: Caller, body: RankBody):
    """One input for many stored users: each user's output (and label distribution), in the order asked."""
    require_admin(who)
    engine, limits = state.engine, state.limits
    if body.model != state.model_name:
        raise APIError(404, f"model {body.model!r} does not exist; this server serves {state.model_name!r}",
                       "invalid_request_error", "model", "model_not_found")
    if not body.users or len(body.users) > limits.max_rank_users:
        raise APIError(400, f"between 1 and {limits.max_rank_users} users per request", "invalid_request_error",
                       "users")
    if not body.input.strip() or len(body.input) > limits.max_input_chars:
        raise APIError(400, f"the input must be 1 to {limits.max_input_chars} characters", "invalid_request_error",
                       "input", "invalid_value")
    if body.max_tokens is not None and body.max_tokens > limits.max_new_tokens:
        raise APIError(400, f"max_tokens {body.max_tokens} is over the limit of {limits.max_new_tokens}",
                       "invalid_request_error", "max_tokens", "invalid_value")
    for user in body.users:
        try:
            check_user_id(user, param="users")
        except InvalidInputError as e:
            raise invalid(e) from None

    def rows() -> list:
        return [engine.prepare(body.input, engine.user_context(u)[0], body.max_tokens) for u in body.users]

    prepared = await run_in_threadpool(rows)
    outs = await asyncio.gather(*(state.batcher.submit(r) for r in prepared))
    results = [{"user": u, "text": o["text"], "cold_start": r.ctx.cold_start, "history_items": o["history_items"],
                **({"label_probs": o["label_probs"]} if engine.spec.labels else {})}
               for u, r, o in zip(body.users, prepared, outs)]
    return {"object": "pplug.rank", "model": state.model_name, "created": int(time.time()), "results": results,
            "pplug": {"version": outs[0]["version"], "task": engine.spec.name, "decoding": outs[0]["decoding"],
                      "soft_prompt_position": engine.snapshot.model.soft_prompt_position,
                      "batch_size": sorted({o["batch_size"] for o in outs})}}


__all__ = ["context_for", "generate", "rank", "router"]
