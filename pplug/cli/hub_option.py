"""The `--hub DIR` option of verbs other than `pplug hub`: the models `pplug generate --hub` runs, the row
`pplug user generate --hub` decodes, the plug-ins `pplug evaluate --hub` loads and the adapter change
`pplug user add-history --hub` prints."""

from __future__ import annotations

import contextlib
from typing import Any

from pplug.cli.commands import ModelPlacement, load_model


def hub_task(hub_dir: str) -> str:
    """The task a hub (or hub run folder) was trained for."""
    from pplug.hub.files import read_hub_json, resolve_hub

    return read_hub_json(resolve_hub(hub_dir))["config"].task


def hub_plugins(hub_dir: str | None) -> dict[str, str] | None:
    """`--hub DIR` as the method plug-ins `pplug.decode.evaluate.evaluate` loads: {"hub": DIR}; None without."""
    from pplug.hub.config import PLUGIN_NAME

    return {PLUGIN_NAME: hub_dir} if hub_dir else None


def hub_method(model: Any) -> str:
    """The hub's method that runs `model`'s weights through the adapters (`pplug+lora-hub` for a `pplug` model);
    ValueError for a model the hub does not combine with."""
    from pplug.hub.methods import HUB

    return HUB.method_for(model.config.method).name


def generate_models(hub_dir: str | None, checkpoint: Any, llm: Any,
                    placement: ModelPlacement) -> tuple[Any, str | None]:
    """What `pplug generate` personalizes and as which method: `--hub` alone -> (the hub, None: its own
    `lora-hub`); `--checkpoint` and `--hub` -> (the PPlug model with the hub loaded onto its LLM,
    `pplug+lora-hub`); `--checkpoint` alone -> (the model, None: its own method)."""
    from pplug.hub.methods import hub_base_model, load_hub
    from pplug.modeling.llm import FrozenLLM

    if checkpoint is None:
        llm = llm or FrozenLLM(hub_base_model(hub_dir), dtype=placement.dtype or "auto", device=placement.device)
        return load_hub(hub_dir, llm), None
    model = load_model(checkpoint, placement, llm=llm)
    if not hub_dir:
        return model, None
    load_hub(hub_dir, model.llm, model.history_encoder)  # joins `model.llm.plugins`, where the method finds it
    return model, hub_method(model)


def user_hub_rows(hub_dir: str | None, model: Any, items: list[dict]) -> contextlib.AbstractContextManager:
    """`pplug user generate --hub`: a context running the user's row through their retrieved adapters
    (`pplug+lora-hub`); without `--hub`, one that changes nothing."""
    from pplug.hub.methods import load_hub
    from pplug.methods.registry import method_rows

    if not hub_dir:
        return contextlib.nullcontext()
    load_hub(hub_dir, model.llm, model.history_encoder)  # joins `model.llm.plugins`, where method_rows finds it
    return method_rows(model.llm, hub_method(model), [items])


def folder_retrieval(hub_dir: str, items: list[dict], encoder: Any) -> Any:
    """The retrieval of one history against a saved hub, reusing `encoder` when it is the hub's."""
    from pplug.hub.files import read_hub_json, resolve_hub
    from pplug.hub.retrieval import retrieve_from_folder

    want = read_hub_json(resolve_hub(hub_dir))["encoder"]
    same = want.get("identity") == encoder.identity and want.get("dim") == encoder.dim
    _, (got,) = retrieve_from_folder(hub_dir, [items], encoder=encoder if same else None)
    return got


def format_retrieval(retrieval: Any) -> str:
    """"group-01 0.88, group-00 0.12"."""
    return ", ".join(f"{n} {w:.2f}" for n, w in zip(retrieval.adapters, retrieval.weights))


def adapter_change_line(before: Any, after: Any) -> str:
    """One line for `pplug user add-history --hub`: the adapters before -> after the new history."""
    same = before.adapters == after.adapters
    return (f"hub adapters: {format_retrieval(before)} -> {format_retrieval(after)} "
            f"({'unchanged' if same else 'changed'})")


__all__ = ["adapter_change_line", "folder_retrieval", "format_retrieval", "generate_models", "hub_method",
           "hub_plugins", "hub_task", "user_hub_rows"]
