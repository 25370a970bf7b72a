"""The `lora-hub` and `pplug+lora-hub` methods: which hub adapters each row of a batch runs through.

    row's user history --persona text--> retrieval (top-k adapters, weights) --merge--> one adapter name per row
    decode(batch) inside `hub.rows(names)`: row i through its own adapter, every row in one forward pass

A hub attaches its LoRA layers to the frozen LLM it is loaded on, and a plain call on that LLM would run
through the hub's general adapter. So whenever a hub is loaded, the methods without one run inside
`hub.use("__base__")` (peft's disabled adapters: the frozen LLM's own layers), and give exactly what they give
with no hub loaded. A user with no history (cold start) gets the general adapter.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from .config import BASE, Retrieval
from .files import resolve_hub  # re-exported: where the method rows' hub comes from
from pplug.methods.registry import get_method


def load_hub(hub_dir: str | os.PathLike, llm: Any, encoder: Any = None, cache_path: Any = None,
             attach_to: Any = None) -> Any:
    """`LoRAHub.from_pretrained` on `llm` from a hub or hub run folder, reusing `encoder` when it is the
    hub's own (a checkpoint's encoder usually is), else loading the hub's. `attach_to`: a hub already on `llm`
    that the new one loads beside (a server's next hub version)."""
    from .model import LoRAHub
    from .files import read_hub_json

    folder = resolve_hub(hub_dir)
    want = read_hub_json(folder)["encoder"]
    same = encoder is not None and want.get("identity") == encoder.identity and want.get("dim") == encoder.dim
    return LoRAHub.from_pretrained(folder, llm, encoder=encoder if same else None, cache_path=cache_path,
                                   attach_to=attach_to)


def row_retrievals(hub: Any, profiles: Sequence[Sequence[dict]]) -> list[Retrieval]:
    """Each row's retrieval from its user's history (profile items); an empty history gets the general adapter."""
    return hub.retrieve_for_histories([list(p) for p in profiles])


def adapters_meta(retrieval: Retrieval) -> dict[str, Any]:
    """What a reply says about a row's adapters: {"names": [...], "weights": [...]}."""
    return {"names": list(retrieval.adapters), "weights": [round(float(w), 6) for w in retrieval.weights]}


@contextlib.contextmanager
def method_rows(hub: Any, method: str, profiles: Sequence[Sequence[dict]]) -> Iterator[list[Retrieval] | None]:
    """Calls on the hub's LLM inside run as `method` runs them: hub methods -> each row through its retrieved
    (merged) adapters; other methods with a hub loaded -> the frozen LLM alone; no hub -> as they are.

    Yields the rows' retrievals (None for methods without a hub).

    Raises:
        ValueError: a hub method without a hub.
    """
    spec = get_method(method)
    if spec.use_hub:
        if hub is None:
            raise ValueError(f"method '{spec.name}' needs a LoRA hub: pass --hub DIR (`pplug hub train` makes one)")
        retrievals = row_retrievals(hub, profiles)
        with hub.rows(hub.adapters_for(retrievals)):
            yield retrievals
    elif hub is not None:
        with hub.use(BASE):
            yield None
    else:
        yield None


def hub_method(model: Any, hub: Any) -> str:
    """The method a model runs with `hub`: `lora-hub` for the frozen LLM alone (no `config`), `pplug+lora-hub`
    for a `pplug` model; other methods have no hub row (ValueError)."""
    if getattr(model, "llm", hub.llm) is not hub.llm:  # the hub's LoRA layers sit in the LLM it was loaded on
        raise ValueError("the LoRA hub was loaded on another LLM than the model's: load_hub(dir, model.llm)")
    method = getattr(getattr(model, "config", None), "method", None)
    if method is None:
        return "lora-hub"
    if method != "pplug":
        raise ValueError(f"a LoRA hub combines with a 'pplug' model (method pplug+lora-hub); this one is '{method}'")
    return "pplug+lora-hub"


__all__ = ["adapters_meta", "hub_method", "load_hub", "method_rows", "resolve_hub", "row_retrievals"]
