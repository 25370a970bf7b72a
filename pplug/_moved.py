"""The import paths of pplug 0.1's flat layout, kept for one release as deprecated aliases.

`import pplug.data` still works and warns (`DeprecationWarning`) with the module's new path; so does a name
of a module that became a folder (`from pplug.store import UserStore`). New code imports the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

# old module -> its new path (modules that became folders are listed in FOLDER_NAMES instead)
MODULES = {
    "pplug.tasks": "pplug.core.tasks", "pplug.io": "pplug.core.io", "pplug.runtime": "pplug.core.runtime",
    "pplug.batch": "pplug.core.batch", "pplug.models": "pplug.core.weights",
    "pplug.checkpoints": "pplug.core.checkpoints",
    "pplug.data": "pplug.lamp.data", "pplug.download": "pplug.lamp.download", "pplug.metrics": "pplug.lamp.metrics",
    "pplug.slices": "pplug.lamp.slices", "pplug.stats": "pplug.lamp.stats",
    "pplug.embedding_cache": "pplug.encode.cache", "pplug.history": "pplug.encode.history",
    "pplug.persona_schema": "pplug.persona.schema", "pplug.persona_render": "pplug.persona.render",
    "pplug.persona_history": "pplug.persona.from_history",
    "pplug.prompts": "pplug.methods.prompts", "pplug.baselines": "pplug.methods.batches",
    "pplug.config": "pplug.modeling.config", "pplug.embedder": "pplug.modeling.embedder",
    "pplug.llm": "pplug.modeling.llm", "pplug.sampling": "pplug.modeling.sampling",
    "pplug.model": "pplug.modeling.model",
    "pplug.synth_vocab": "pplug.synth.vocab", "pplug.synth_report": "pplug.synth.report",
    "pplug.decoding": "pplug.decode.choose", "pplug.inference": "pplug.decode.inference",
    "pplug.preference_models": "pplug.decode.preference", "pplug.evaluate": "pplug.decode.evaluate",
    "pplug.train_module": "pplug.train.module", "pplug.datamodule": "pplug.train.data",
    "pplug.callbacks": "pplug.train.callbacks", "pplug.preference_models_train": "pplug.train.preference",
    "pplug.store_base": "pplug.store.base", "pplug.store_postgres": "pplug.store.postgres",
    "pplug.store_memory": "pplug.store.memory", "pplug.store_schema": "pplug.store.schema",
    "pplug.store_pg_schema": "pplug.store.pg_schema", "pplug.validation": "pplug.store.validation",
    "pplug.fast_adapt": "pplug.adapt.fast",
    "pplug.lora_hub": "pplug.hub.model", "pplug.lora_hub_config": "pplug.hub.config",
    "pplug.lora_hub_files": "pplug.hub.files", "pplug.lora_hub_train": "pplug.hub.train",
    "pplug.lora_hub_adapt": "pplug.hub.adapt", "pplug.hub_methods": "pplug.hub.methods",
    "pplug.server": "pplug.serve.app", "pplug.serve_batching": "pplug.serve.batching",
    "pplug.serve_vllm": "pplug.serve.vllm", "pplug.api_schema": "pplug.serve.schema",
    "pplug.private": "pplug.serve.privacy", "pplug.commands": "pplug.cli.commands",
}

# a module that became a folder of the same name -> where its old names are defined now
FOLDER_NAMES = {
    "pplug.persona": ("pplug.persona.schema", "pplug.persona.render", "pplug.persona.from_history"),
    "pplug.store": ("pplug.store.sqlite", "pplug.store.base", "pplug.store.schema"),
    "pplug.synth": ("pplug.synth.generate", "pplug.synth.vocab", "pplug.synth.report"),
    "pplug.methods": ("pplug.methods.registry",),
    "pplug.adapt": ("pplug.adapt.slow", "pplug.adapt.fast"),
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in pplug 0.3", DeprecationWarning, stacklevel=3)


def folder_name(folder: str, name: str) -> Any:
    """A folder's `__getattr__`: an old name of the module the folder replaced, with a warning."""
    for module in FOLDER_NAMES.get(folder, ()):
        mod = importlib.import_module(module)
        if name in vars(mod):
            _warn(f"{folder}.{name}", f"{module}.{name}")
            return getattr(mod, name)
    raise AttributeError(f"module {folder!r} has no attribute {name!r}")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn(spec.name, self.new)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:  # the new module is already executed
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        new = MODULES.get(fullname)
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new)) if new else None


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
