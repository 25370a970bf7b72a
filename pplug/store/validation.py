"""What the user store accepts: user ids and history items, checked in one place before anything is written.

Every way into a user's state -- `pplug serve`, `pplug user ...`, `UserStoreBase.create_user` /
`add_interactions` and `pplug.adapt.fast.add_history` -- runs these checks, so a label the task does not
have, an empty text or an id like "../../etc/passwd" never reaches the store, the persona, the rating
shares, the logs or an export. A request is checked whole before its first write: one bad item refuses
the whole upload, and the error names the item and the field (`history item 2: field 'score': ...`).

The rules (`docs/serving.md`, "What the store accepts"):

- user id: `USER_ID_PATTERN` (letters, digits and `. _ @ -`, 1 to 128 characters), not "." or "..";
- history item: a JSON object of at most `MAX_ITEM_CHARS` characters (as stored), nested at most
  `MAX_DEPTH` levels, no NUL character or unpaired surrogate in any string, only finite numbers;
- every field of the task's `TaskSpec.profile_fields` present; the label field (`output_field` of a task
  with labels) one of `TaskSpec.labels`, the others strings, non-empty after stripping and at most
  `MAX_TEXT_CHARS` characters;
- ratings (LaMP_3): the scores 1..5 as `"4"`, `4`, `"4.0"` or `4.0`, stored as `"4"`; classification labels
  spelled as in `TaskSpec.labels` (surrounding spaces dropped).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from .schema import StoreError

USER_ID_PATTERN = r"[A-Za-z0-9._@-]{1,128}"
"""A user id: safe in a URL path, a file name and a log line as it is (no "/", spaces or control characters)."""
MAX_ITEM_CHARS = 20_000
"""Characters of one history item's JSON (as the store keeps it: non-ASCII characters count once)."""
MAX_TEXT_CHARS = 16_000
"""Characters of one text field of an item (a review, an abstract, a title)."""
MAX_DEPTH = 8
"""Nesting levels of objects / lists inside one item (LaMP items are flat)."""
MAX_HISTORY_FILE_BYTES = 64_000_000
"""Bytes of one history file `pplug user add-history` reads."""
IDEMPOTENCY_KEY_PATTERN = r"[\x21-\x7e]{1,255}"
"""An idempotency key: 1 to 255 visible ASCII characters (a UUID, say); safe in an HTTP header and a log line."""
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

_USER_ID = re.compile(USER_ID_PATTERN)
_RATING = re.compile(r"([1-5])(?:\.0+)?")
_SHOWN = 40  # characters of a bad value quoted in a message


class InvalidInputError(StoreError):
    """Input the store refuses; the message is one line naming the item and field.

    `param` is where the value sat in an API request body ("items.2.score", "user_id"), for
    `pplug serve`'s error replies; `code` is OpenAI's error code for it.
    """

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


def _show(value: Any) -> str:
    """A bad value quoted for a one-line message: repr (no raw newlines or control characters), cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def check_user_id(user_id: Any, param: str = "user_id") -> str:
    """`user_id` if it is a valid user id (see `USER_ID_PATTERN`).

    Raises:
        InvalidInputError: naming the id (quoted, cut short) and the rule.
    """
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id) or user_id in (".", ".."):
        raise InvalidInputError(f"invalid user id {_show(user_id)}: use 1 to 128 letters, digits and . _ @ - "
                                "(not '.' or '..')", param)
    return user_id


def check_idempotency_key(key: Any, param: str = "Idempotency-Key") -> str:
    """`key` if it is a valid idempotency key (see `IDEMPOTENCY_KEY_PATTERN`), else InvalidInputError."""
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInputError(f"invalid idempotency key {_show(key)}: use 1 to 255 visible ASCII characters "
                                "(e.g. a UUID)", param)
    return key


def _check_json(value: Any, where: str, param: str, depth: int = 0) -> None:
    """Refuse what JSON or the databases cannot hold: NUL, unpaired surrogates, NaN, other types, deep nesting."""
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"{where}: nested deeper than {MAX_DEPTH} levels", param)
    if isinstance(value, str):
        if "\x00" in value:  # PostgreSQL text cannot hold NUL
            raise InvalidInputError(f"{where}: contains a NUL character", param)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # an unpaired surrogate: no UTF-8 for it, so no database takes it
            raise InvalidInputError(f"{where}: not valid Unicode (an unpaired surrogate)", param) from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{where}: {value} is not a JSON number", param)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(f"{where}: key {_show(k)} is not a string", param)
            _check_json(k, f"{where}: key {_show(k)}", param, depth + 1)
            _check_json(v, f"{where}.{k}" if depth else f"{where}: field {k!r}", f"{param}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", f"{param}.{i}", depth + 1)
    elif value is not None and not isinstance(value, (bool, int)):
        raise InvalidInputError(f"{where}: {type(value).__name__} is not a JSON value", param)


def canonical_label(spec: Any, value: Any) -> str | None:
    """The stored spelling of a label value of `spec` (a `TaskSpec` with labels), or None if it is not one.

    Ratings accept a score 1..5 as a string or a number ("4", 4, "4.0", 4.0; not 4.5, True or "four") and
    store "4"; classification labels must match `spec.labels` after stripping surrounding spaces.
    """
    if spec.is_rating:
        if isinstance(value, bool):  # True is an int to Python, not a score
            return None
        if isinstance(value, (int, float)):
            value = repr(float(value)) if isinstance(value, float) else str(value)
        if not isinstance(value, str):
            return None
        m = _RATING.fullmatch(value.strip())
        return m.group(1) if m and m.group(1) in spec.labels else None
    if isinstance(value, str) and value.strip() in spec.labels:
        return value.strip()
    return None


def check_item(item: Any, spec: Any = None, index: int = 0, max_item_chars: int = MAX_ITEM_CHARS) -> dict:
    """One history item checked against the rules above (`spec`: its `TaskSpec`; None checks only the JSON
    rules); returns a copy with the label in its stored spelling.

    Raises:
        InvalidInputError: naming the item index and the field, with `param` "items.<index>.<field>".
    """
    where, param = f"history item {index}", f"items.{index}"
    if not isinstance(item, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(item).__name__}", param)
    _check_json(item, where, param)
    out = dict(item)
    for name in spec.profile_fields if spec is not None else ():
        at, at_param = f"{where}: field {name!r}", f"{param}.{name}"
        if name not in item:
            raise InvalidInputError(f"{at}: missing (a {spec.name} item has {', '.join(spec.profile_fields)})",
                                    at_param)
        value = item[name]
        if name == spec.output_field and spec.labels:
            label = canonical_label(spec, value)
            if label is None:
                shown = ", ".join(spec.labels) if len(spec.labels) <= 5 else ", ".join(spec.labels[:5]) + ", ..."
                kind = "a score" if spec.is_rating else "a label"
                raise InvalidInputError(f"{at}: {_show(value)} is not {kind} of {spec.name} ({shown})", at_param)
            out[name] = label
            continue
        if not isinstance(value, str):
            raise InvalidInputError(f"{at}: expected a string, got {type(value).__name__}", at_param)
        if not value.strip():
            raise InvalidInputError(f"{at}: empty", at_param)
        if len(value) > MAX_TEXT_CHARS:
            raise InvalidInputError(f"{at}: {len(value)} characters, over the limit of {MAX_TEXT_CHARS}", at_param,
                                    "history_too_large")
    size = len(json.dumps(out, ensure_ascii=False))
    if size > max_item_chars:
        raise InvalidInputError(f"{where}: {size} characters of JSON, over the limit of {max_item_chars}", param,
                                "history_too_large")
    return out


def item_json_schema(spec: Any) -> dict:
    """The JSON Schema of one history item of `spec` (a `TaskSpec`), for `pplug serve`'s OpenAPI document.

    It says what `check_item` accepts as far as JSON Schema can (required fields, labels, non-blank bounded
    texts); `check_item` stays the rule (it also refuses NUL characters and items over `MAX_ITEM_CHARS`).
    """
    text = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS, "pattern": r"\S"}
    props: dict[str, Any] = {}
    for name in spec.profile_fields:
        if name == spec.output_field and spec.labels:
            labels: dict[str, Any] = {"enum": list(spec.labels)}
            if spec.is_rating:
                labels = {"anyOf": [labels, {"type": "integer", "minimum": 1, "maximum": 5}]}
            props[name] = labels
        else:
            props[name] = dict(text)
    return {"type": "object", "title": f"{spec.name} history item", "required": list(spec.profile_fields),
            "properties": props}


def check_items(items: Sequence[Any], task: Any = None, max_item_chars: int = MAX_ITEM_CHARS) -> list[dict]:
    """All items checked (`check_item`) before any is written; returns them with labels in stored spelling.

    Args:
        items: history items, oldest first.
        task: their task (a name or `TaskSpec`); None checks only the JSON rules (a user created without one).
        max_item_chars: bound on one item's JSON (a server may set a lower one).

    Raises:
        InvalidInputError: the first bad item, by index and field.
    """
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise InvalidInputError(f"history items: expected a list of JSON objects, got {type(items).__name__}", "items")
    spec = None
    if task is not None:
        from pplug.core.tasks import get_task

        spec = get_task(task)
    return [check_item(it, spec, i, max_item_chars) for i, it in enumerate(items)]


__all__ = ["InvalidInputError", "MAX_DEPTH", "MAX_HISTORY_FILE_BYTES", "MAX_ITEM_CHARS", "MAX_TEXT_CHARS",
           "IDEMPOTENCY_KEY_PATTERN", "USER_ID_PATTERN", "canonical_label", "check_idempotency_key", "check_item",
           "check_items", "check_user_id", "item_json_schema"]
