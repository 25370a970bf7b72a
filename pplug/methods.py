"""The compared methods as configurations of one model around one frozen LLM.

| method            | prompt text                     | soft prefix                        | trained            |
|-------------------|---------------------------------|------------------------------------|--------------------|
| `none`            | input                           | none (the frozen LLM as is)        | nothing            |
| `prompt-tuned`    | input                           | instruction embedding              | instruction        |
| `retrieval`       | top-k history items + input     | instruction embedding              | instruction        |
| `pplug`           | input                           | instruction + user embedding       | PPlug embedder     |
| `pplug+retrieval` | top-1 history item + input      | instruction + user embedding       | PPlug embedder     |

`retrieval` gets a trained instruction embedding too, so it competes with PPlug on equal terms (the
frozen LLM alone cannot even produce the answer format). `pplug.baselines` retrieves and builds the batches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Method(str, Enum):
    """Names of the compared methods (CLI and config values)."""

    NONE = "none"
    PROMPT_TUNED = "prompt-tuned"
    RETRIEVAL = "retrieval"
    PPLUG = "pplug"
    PPLUG_RETRIEVAL = "pplug+retrieval"


@dataclass(frozen=True)
class MethodSpec:
    """How one method uses the shared model."""

    name: str
    """Method name (a `Method` value)."""
    trainable: bool
    """False only for `none` (no trainable parts)."""
    use_user_embedding: bool
    """Whether the PPlug user embedding is prepended (PPlugConfig.use_user_embedding)."""
    retrieval_k: int
    """Default number of retrieved history items written into the prompt (0 = no retrieval)."""
    description: str
    """One line for tables and help."""


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("none", False, False, 0, "frozen LLM, raw prompt"),
        MethodSpec("prompt-tuned", True, False, 0, "trained task soft prompt (instruction embedding) only"),
        MethodSpec("retrieval", True, False, 2, "BM25 top-k history items in the prompt + trained instruction"),
        MethodSpec("pplug", True, True, 0, "PPlug: instruction + input-aware user embedding"),
        MethodSpec("pplug+retrieval", True, True, 1, "PPlug + top-1 retrieved history item in the prompt"),
    )
}
"""All methods by name, in table order."""

RETRIEVERS = ("bm25", "embedding")


def get_method(name: str | Method | MethodSpec) -> MethodSpec:
    """Look up a method by name; unknown names raise ValueError listing the known ones."""
    if isinstance(name, MethodSpec):
        return name
    key = name.value if isinstance(name, Method) else str(name).strip().lower()
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[key]


def method_config(config: Any, method: str | MethodSpec) -> Any:
    """The PPlugConfig a trainable method uses (same fields, `use_user_embedding` set by the method).

    `none` has no trainable parts and so no PPlugConfig of its own; it raises ValueError here.
    """
    spec = get_method(method)
    if not spec.trainable:
        raise ValueError(f"method '{spec.name}' has no trainable parts: use the frozen LLM directly")
    return dataclasses.replace(config, method=spec.name, use_instruction=True)


def resolve_k(method: str | MethodSpec, retrieval_k: int | None) -> int:
    """Retrieved items per prompt: 0 for methods without retrieval, else `retrieval_k` or the method default."""
    spec = get_method(method)
    if spec.retrieval_k == 0:
        return 0
    k = spec.retrieval_k if retrieval_k is None else int(retrieval_k)
    if k < 1:
        raise ValueError(f"retrieval_k must be >= 1 for method '{spec.name}', got {k}")
    return k


__all__ = ["METHODS", "Method", "MethodSpec", "RETRIEVERS", "get_method", "method_config", "resolve_k"]
