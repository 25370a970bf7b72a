"""The LoRA hub as a method plug-in: `lora-hub` and `pplug+lora-hub`, registered with `pplug.methods.registry`.

    row's user history --persona text--> retrieval (top-k adapters, weights) --merge--> one adapter name per row
    decode(batch) inside `hub.row_context(...)`: row i through its own adapter, every row in one forward pass

pyproject.toml names this module in the `pplug.methods` entry-point group, so the registry imports it the first
time a method or plug-in it does not know is asked for. A hub attaches its LoRA layers to the frozen LLM it is
loaded on and sits in `llm.plugins["hub"]`; the methods without it run inside `hub.use("__base__")` (peft's
disabled adapters: the frozen LLM's own layers) and give exactly what they give with no hub loaded.
"""

from __future__ import annotations

import os
from typing import Any

from pplug.methods.registry import MethodSpec, PluginSpec, register_plugin

from .config import PLUGIN_NAME
from .files import read_hub_json, resolve_hub


def load_hub(hub_dir: str | os.PathLike, llm: Any, encoder: Any = None, cache_path: Any = None,
             attach_to: Any = None) -> Any:
    """`LoRAHub.from_pretrained` on `llm` from a hub or hub run folder, reusing `encoder` when it is the
    hub's own (a checkpoint's encoder usually is), else loading the hub's. `attach_to`: a hub already on `llm`
    that the new one loads beside (a server's next hub version)."""
    from .model import LoRAHub

    folder = resolve_hub(hub_dir)
    want = read_hub_json(folder)["encoder"]
    same = encoder is not None and want.get("identity") == encoder.identity and want.get("dim") == encoder.dim
    return LoRAHub.from_pretrained(folder, llm, encoder=encoder if same else None, cache_path=cache_path,
                                   attach_to=attach_to)


def hub_base_model(hub_dir: str | os.PathLike) -> str:
    """The base LLM a saved hub was trained on, read from its hub.json without loading it."""
    return read_hub_json(resolve_hub(hub_dir))["config"].base_model_name_or_path


def hub_task(hub_dir: str | os.PathLike) -> str:
    """The task a saved hub (or hub run folder) was trained for, read from its hub.json."""
    return read_hub_json(resolve_hub(hub_dir))["config"].task


HUB = register_plugin(PluginSpec(
    name=PLUGIN_NAME,
    methods=(
        MethodSpec("lora-hub", False, False, 0, "frozen LLM, raw prompt, each row through its retrieved hub adapters",
                   plugin=PLUGIN_NAME),
        MethodSpec("pplug+lora-hub", True, True, 0, "PPlug (its weights) + each row's retrieved hub adapters",
                   plugin=PLUGIN_NAME, weights_of="pplug"),
    ),
    load=load_hub,
    resolve=resolve_hub,
    base_model=hub_base_model,
    task=hub_task,
    needs="a LoRA hub: pass --hub DIR (`pplug hub train` makes one)",
))
"""The hub's entry in the method registry."""


__all__ = ["HUB", "hub_base_model", "hub_task", "load_hub"]
