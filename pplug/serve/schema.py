"""What goes over the wire of `pplug serve` (`pplug.serve.app`): request bodies, bounds on a request, and
error replies in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pplug.store.validation import MAX_ITEM_CHARS, USER_ID_PATTERN


@dataclass
class Limits:
    """Bounds on one request (larger -> 4xx, nothing changed)."""

    max_body_bytes: int = 2_000_000
    max_input_chars: int = 8_000
    max_prompts: int = 8
    max_new_tokens: int = 256
    max_history_items: int = 1_000
    """Items per history upload."""
    max_item_chars: int = MAX_ITEM_CHARS
    """Characters of one history item (its JSON); the store refuses more than `pplug.store.validation.MAX_ITEM_CHARS`."""
    max_rank_users: int = 4_096
    """Users one `POST /v1/rank` request asks about."""


class APIError(Exception):
    """An error reply in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_response(status: int, message: str, type_: str, param: str | None, code: str | None) -> JSONResponse:
    """An error reply in OpenAI's shape."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status)


# --- request bodies (extra fields allowed: OpenAI clients send more than we use) ---


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class GenerateBody(_Body):
    model: str
    user: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int = 1
    stream: bool = False
    user_vector: dict | None = None


class CompletionBody(GenerateBody):
    prompt: str | list[str]


class RankBody(_Body):
    """`POST /v1/rank`: one input, many stored users (each user's output and, for label tasks, distribution)."""

    model: str
    input: str
    users: list[str]
    max_tokens: int | None = Field(None, ge=1)


class ChatMessage(_Body):
    role: str
    content: str | list[dict] | None = None


class ChatBody(GenerateBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CreateUserBody(_Body):
    # the pattern is documented in the OpenAPI schema and enforced by `pplug.store.validation.check_user_id`, so the
    # reply to a bad id is the same one the CLI and the store give
    user_id: str = Field(description="1 to 128 letters, digits and . _ @ -; not '.' or '..'",
                         json_schema_extra={"pattern": f"^{USER_ID_PATTERN}$"})
    task: str | None = None
    persona: dict | None = None


class HistoryBody(_Body):
    items: list[dict]


__all__ = ["APIError", "ChatBody", "ChatMessage", "CompletionBody", "CreateUserBody", "GenerateBody", "HistoryBody",
           "Limits", "error_response"]
