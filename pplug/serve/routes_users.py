"""`pplug serve`'s user routes: create and list users (admin), and a user's record, history uploads and erasure
(the admin or the user's own key).

A history upload is checked item by item before the first write, is stored in one transaction (with an
`Idempotency-Key` header, once however often it is retried) and takes effect at the next request;
erasure removes the user from the store, the embedding cache and the engine's context cache, and says what
it removed (`erase_user`).
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header
from starlette.concurrency import run_in_threadpool

from pplug.adapt.fast import AdaptError, add_history
from pplug.core.tasks import get_task
from pplug.persona.schema import PersonaError
from pplug.store.base import UserStoreBase
from pplug.store.schema import DuplicateUserError, IdempotencyKeyReusedError, StoreError, UnknownUserError
from pplug.store.validation import InvalidInputError, check_idempotency_key, check_items, check_user_id

from .access import USER_KEY_PREFIX, Caller, ServerState, State, hash_key, invalid, require_access, require_admin
from .schema import APIError, CreateUserBody, HistoryBody

router = APIRouter()


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


def unknown_user(user_id: str) -> APIError:
    """The 404 of a user that does not exist, or stopped existing while the request ran (an erasure won)."""
    return APIError(404, f"unknown user {user_id!r}", "invalid_request_error", "user_id", "user_not_found")


def require_user(state: ServerState, user_id: str) -> None:
    if not state.store.has_user(user_id):
        raise unknown_user(user_id)


def client_message(e: Exception, store: UserStoreBase) -> str:
    """An error's message as a client may see it: where the store lives (a path, a database URL) is the
    server's business."""
    text = str(e)
    for where in {store.location, str(getattr(store, "path", store.location))}:
        text = text.replace(where, "the user store")
    return text


@router.post("/v1/users", status_code=201)
async def create_user(state: State, who: Caller, body: CreateUserBody):
    require_admin(who)
    store = state.store
    key = USER_KEY_PREFIX + secrets.token_urlsafe(24)

    try:
        check_user_id(body.user_id)
        task = get_task(body.task or state.engine.spec.name).name
    except InvalidInputError as e:
        raise invalid(e) from None
    except ValueError as e:
        raise APIError(400, str(e), "invalid_request_error", "task", "invalid_value") from None

    def work():
        try:
            store.create_user(body.user_id, body.persona, task=task, api_key_sha256=hash_key(key))  # one transaction
        except DuplicateUserError:
            raise APIError(409, f"user {body.user_id!r} already exists", "invalid_request_error", "user_id",
                           "user_exists") from None
        except InvalidInputError as e:
            raise invalid(e) from None
        except PersonaError as e:  # the same rules as `pplug user create --persona`, naming the field
            message = str(e).replace(f"persona of {body.user_id}: ", "persona: ", 1)
            raise APIError(400, client_message(message, store), "invalid_request_error",
                           f"persona.{e.field}" if e.field else "persona", "invalid_value") from None
        except (StoreError, ValueError) as e:
            raise APIError(400, client_message(e, store), "invalid_request_error", "persona", "invalid_value") from None
        try:
            return store.user_task(body.user_id)
        except UnknownUserError:  # erased already
            raise unknown_user(body.user_id) from None

    task = await run_in_threadpool(work)
    return {"object": "user", "user_id": body.user_id, "task": task, "persona_version": 1, "api_key": key}


@router.get("/v1/users")
async def list_users(state: State, who: Caller):
    require_admin(who)
    return {"object": "list", "data": await run_in_threadpool(state.store.users)}


@router.get("/v1/users/{user_id}")
async def show_user(state: State, who: Caller, user_id: str):
    require_access(who, user_id)
    store = state.store

    def work():
        require_user(state, user_id)
        try:
            return {"object": "user", "user_id": user_id, "task": store.user_task(user_id),
                    "history": store.count_by_task(user_id), "persona_version": store.persona_version(user_id),
                    "persona": store.persona(user_id).to_dict()}
        except UnknownUserError:  # erased while this was read
            raise unknown_user(user_id) from None

    return await run_in_threadpool(work)


@router.post("/v1/users/{user_id}/history")
async def post_history(state: State, who: Caller, user_id: str, body: HistoryBody,
                       idempotency_key: Annotated[str | None, Header(
                           description="the client's key of this upload (1 to 255 visible ASCII characters, e.g. a "
                           "UUID): a retry with the same key stores nothing twice and gets the first reply")] = None):
    require_access(who, user_id)
    store, engine, limits = state.store, state.engine, state.limits
    if not body.items:
        raise APIError(400, "items: empty list", "invalid_request_error", "items", "invalid_value")
    if len(body.items) > limits.max_history_items:
        raise APIError(400, f"items: {len(body.items)} items, at most {limits.max_history_items} per request",
                       "invalid_request_error", "items", "history_too_large")
    if idempotency_key is not None:
        try:
            check_idempotency_key(idempotency_key)
        except InvalidInputError as e:
            raise invalid(e) from None

    def work():
        require_user(state, user_id)
        try:  # every item checked before the first write (add_history checks again, under the store's limit)
            task = store.user_task(user_id) or engine.spec.name
            items = check_items(body.items, task, max_item_chars=limits.max_item_chars)
            with engine.encoder_lock:
                plugin = engine.plugin  # what the new items change of the user's plug-in state (a hub: adapters)
                before = engine.plugin_state(store.history_items(user_id, task=task)) if plugin else None
                res = add_history(store, user_id, items, engine.encoder, task=task, idempotency_key=idempotency_key)
                after = engine.plugin_state(store.history_items(user_id, task=task)) if plugin else None
            count = store.count_interactions(user_id)
        except InvalidInputError as e:
            raise invalid(e) from None
        except UnknownUserError:  # erased after the check above: the documented 404, not a 400
            raise unknown_user(user_id) from None
        except IdempotencyKeyReusedError as e:
            raise APIError(422, str(e), "invalid_request_error", "Idempotency-Key", "idempotency_key_reused") from None
        except (AdaptError, StoreError, ValueError) as e:
            raise APIError(400, client_message(e, store), "invalid_request_error", "items", "invalid_value") from None
        return {"object": "history", "user_id": user_id, "added": len(res.ids), "ids": res.ids,
                "history_items": count, "persona_version": res.persona_version,
                "persona_diff": res.diff, **({"replayed": True} if res.replayed else {}),
                **(plugin.describe_change(before, after) if plugin else {})}

    return await run_in_threadpool(work)


@router.delete("/v1/users/{user_id}")
async def delete_user(state: State, who: Caller, user_id: str):
    require_access(who, user_id)
    engine = state.engine

    def work():
        require_user(state, user_id)
        with engine.encoder_lock:  # no request can re-cache the user's texts or context meanwhile
            try:
                removed = erase_user(state.store, user_id, engine.encoder)
            except UnknownUserError:  # another erasure of the same user won the race
                raise unknown_user(user_id) from None
            removed["soft_prompt_cache_entries"] = engine.invalidate(user_id)
        return {"object": "user.deleted", "user_id": user_id, "deleted": True, "removed": removed}

    return await run_in_threadpool(work)


__all__ = ["client_message", "erase_user", "require_user", "router", "unknown_user"]
