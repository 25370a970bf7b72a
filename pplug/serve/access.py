"""What every route of `pplug serve` reads: the server's shared state and the caller, both FastAPI dependencies.

`State` is the `ServerState` that `pplug.serve.app.create_app` puts on `app.state.server` (the store, the
engine, the batcher, the request limits, the model name). `Caller` authenticates the request's API key
(`Authorization: Bearer <key>`, read by `fastapi.security.HTTPBearer`, which also declares the scheme in the
OpenAPI document): None for the admin key, else the id of the user the key belongs to; anything else is a
401 in OpenAI's error shape. The routes then apply the access rules (`require_admin`, `require_access`).
The store keeps only the sha256 of a user key (`hash_key`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pplug.store.base import UserStoreBase
from pplug.store.validation import InvalidInputError, check_user_id

from .schema import APIError, Limits

USER_KEY_PREFIX = "pplug-u-"


def hash_key(key: str) -> str:
    """sha256 hex of an API key (what the store keeps)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class ServerState:
    """What the routes share, set once by `create_app` (on `app.state.server`).

    `engine` and `batcher` are the server's `pplug.serve.batching.Engine` and `Batcher`, typed Any: importing
    the engine here would stack every route above it (the LoRA hub included) in the import floors that
    tests/test_imports.py keeps low.
    """

    store: UserStoreBase
    engine: Any
    batcher: Any
    limits: Limits
    admin_key: str
    model_name: str
    """The model id clients pass (`--model-name`)."""
    started: int
    """When the server started (Unix seconds; the model's `created`)."""


def server_state(request: Request) -> ServerState:
    return request.app.state.server


State = Annotated[ServerState, Depends(server_state)]

# auto_error=False: a missing or non-bearer header is answered below, in OpenAI's error shape
bearer = HTTPBearer(auto_error=False, description="the admin key, or a user's key (`pplug-u-...`)")


async def caller(state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                 ) -> str | None:
    """None for the admin, else the user id the key belongs to (401 otherwise)."""
    if credentials is None:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", "invalid_request_error",
                       None, "invalid_api_key")
    key = credentials.credentials  # stripped, never empty
    if hmac.compare_digest(key.encode(), state.admin_key.encode()):
        return None
    uid = state.store.user_for_api_key_hash(hash_key(key)) if key.startswith(USER_KEY_PREFIX) else None
    if uid is None:
        raise APIError(401, "invalid API key", "invalid_request_error", None, "invalid_api_key")
    return uid


Caller = Annotated[str | None, Depends(caller)]


def invalid(e: InvalidInputError) -> APIError:
    """A refused input as a 400 naming the field at fault."""
    return APIError(400, str(e), "invalid_request_error", e.param, e.code)


def require_admin(who: str | None) -> None:
    if who is not None:
        raise APIError(403, "this needs the admin key", "permission_error", None, "permission_denied")


def require_access(who: str | None, user_id: str) -> None:
    """The admin may reach any valid user id, a user key only its own user."""
    if who is not None and who != user_id:  # same reply whether the other user exists or not
        raise APIError(403, f"this key may not access user {user_id!r}", "permission_error", None, "permission_denied")
    try:  # only the admin gets this far with another id: a bad one is named, never looked up
        check_user_id(user_id)
    except InvalidInputError as e:
        raise invalid(e) from None


__all__ = ["Caller", "ServerState", "State", "USER_KEY_PREFIX", "caller", "hash_key", "invalid", "require_access",
           "require_admin", "server_state"]
