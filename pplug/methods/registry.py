"""The compared methods as configurations of one model around one frozen LLM.

| method            | prompt text                     | soft prefix                        | trained            |
|-------------------|---------------------------------|------------------------------------|--------------------|
| `none`            | input                           | none (the frozen LLM as is)        | nothing            |
| `prompt-tuned`    | input                           | instruction embedding              | instruction        |
| `retrieval`       | top-k history items + input     | instruction embedding              | instruction        |
| `pplug`           | input                           | instruction + user embedding       | PPlug embedder     |
| `pplug+retrieval` | top-1 history item + input      | instruction + user embedding       | PPlug embedder     |
| `lora-hub`        | input                           | none; each row through its user's  | the hub's adapters |
|                   |                                 | retrieved LoRA hub adapters        |                    |
| `pplug+lora-hub`  | input                           | instruction + user embedding, and  | PPlug embedder and |
|                   |                                 | the row's retrieved hub adapters   | the hub's adapters |

`retrieval` gets a trained instruction embedding too, so it competes with PPlug on equal terms (the
frozen LLM alone cannot even produce the answer format). `pplug.methods.batches` retrieves and builds the batches.
The two hub methods take a LoRA hub (`pplug.hub.model`, trained by `pplug hub train`) besides any PPlug weights:
the adapters each row runs through follow from its user's persona text (`pplug.hub.methods`).
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
    LORA_HUB = "lora-hub"
    PPLUG_LORA_HUB = "pplug+lora-hub"


@dataclass(frozen=True)
class MethodSpec:
    """How one method uses the shared model."""

    name: str
    """Method name (a `Method` value)."""
    trainable: bool
    """Whether the method has PPlug weights of its own to train (False for `none` and `lora-hub`)."""
    use_user_embedding: bool
    """Whether the PPlug user embedding is prepended (PPlugConfig.use_user_embedding)."""
    retrieval_k: int
    """Default number of retrieved history items written into the prompt (0 = no retrieval)."""
    description: str
    """One line for tables and help."""
    use_hub: bool = False
    """Whether each row runs through its user's retrieved LoRA hub adapters (needs a hub, `--hub DIR`)."""


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("none", False, False, 0, "frozen LLM, raw prompt"),
        MethodSpec("prompt-tuned", True, False, 0, "trained task soft prompt (instruction embedding) only"),
        MethodSpec("retrieval", True, False, 2, "BM25 top-k history items in the prompt + trained instruction"),
        MethodSpec("pplug", True, True, 0, "PPlug: instruction + input-aware user embedding"),
        MethodSpec("pplug+retrieval", True, True, 1, "PPlug + top-1 retrieved history item in the prompt"),
        MethodSpec("lora-hub", False, False, 0, "frozen LLM, raw prompt, each row through its retrieved hub adapters",
                   use_hub=True),
        MethodSpec("pplug+lora-hub", True, True, 0, "PPlug (its weights) + each row's retrieved hub adapters",
                   use_hub=True),
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

    `none` and `lora-hub` have no trainable parts and so no PPlugConfig of its own, and `pplug+lora-hub` runs
    a `pplug` model with a hub; they raise ValueError here.
    """
    spec = get_method(method)
    if not spec.trainable:
        raise ValueError(f"method '{spec.name}' has no trainable parts: use the frozen LLM directly")
    if spec.use_hub:
        raise ValueError(f"method '{spec.name}' is a pplug model run with a LoRA hub: train method 'pplug'")
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
