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

Plug-ins add methods. A plug-in is a module named in the `pplug.methods` entry-point group (pyproject.toml);
importing it calls `register_plugin` with its `PluginSpec`: its methods, how to load it onto a frozen LLM and
what it was made for. Loaded, it sits in `FrozenLLM.plugins` and decides how each row of a batch runs
(`method_rows`), so decoding, evaluation and serving know methods only by their specs. The LoRA hub
(`pplug.hub.methods`: `lora-hub`, `pplug+lora-hub`) is one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

PLUGIN_GROUP = "pplug.methods"
"""The entry-point group of method plug-ins: each entry names a module that calls `register_plugin`."""


class Method(str, Enum):
    """Names of the built-in methods (CLI and config values); plug-ins add theirs by name (`register_plugin`)."""

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
    """Whether the method has PPlug weights of its own to train (False for `none` and `lora-hub`)."""
    use_user_embedding: bool
    """Whether the PPlug user embedding is prepended (PPlugConfig.use_user_embedding)."""
    retrieval_k: int
    """Default number of retrieved history items written into the prompt (0 = no retrieval)."""
    description: str
    """One line for tables and help."""
    plugin: str | None = None
    """The plug-in each row runs through (its `PluginSpec.name`), loaded onto the frozen LLM; None: none."""
    weights_of: str | None = None
    """The method whose trained weights this one runs (`pplug+retrieval` and `pplug+lora-hub` run `pplug`'s)."""


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("none", False, False, 0, "frozen LLM, raw prompt"),
        MethodSpec("prompt-tuned", True, False, 0, "trained task soft prompt (instruction embedding) only"),
        MethodSpec("retrieval", True, False, 2, "BM25 top-k history items in the prompt + trained instruction"),
        MethodSpec("pplug", True, True, 0, "PPlug: instruction + input-aware user embedding"),
        MethodSpec("pplug+retrieval", True, True, 1, "PPlug + top-1 retrieved history item in the prompt",
                   weights_of="pplug"),
    )
}
"""All methods by name, in table order (the plug-ins' after the built-in ones, once loaded)."""

RETRIEVERS = ("bm25", "embedding")


@runtime_checkable
class MethodPlugin(Protocol):
    """A plug-in loaded onto a frozen LLM (`PluginSpec.load`): what decides how each row of a batch runs."""

    llm: Any
    """The `FrozenLLM` it is loaded on (its `plugins` holds it under the spec's name)."""
    encoder: Any
    """Its frozen sentence encoder (`HistoryEncoder`)."""
    task: str
    """The LaMP task it was made for."""
    alone: str
    """The method that runs the plug-in on the frozen LLM without trained weights (a plug-in passed to
    `personalize` as the model runs it)."""

    def row_context(self, method: MethodSpec | None,
                    profiles: Sequence[Sequence[dict]]) -> contextlib.AbstractContextManager:
        """Calls on `llm` inside run as `method` runs them with this plug-in (None: a method without it, which
        must run exactly as with no plug-in loaded); yields each row's state (`state_for_history`), or None."""
        ...

    # what a server needs: the per-user state it caches, running rows from it, and what replies say of it

    def state_for_history(self, items: Sequence[dict]) -> Any:
        """The plug-in's state for a stored user, from their history items (a hub: the retrieved adapters)."""
        ...

    def state_for_persona(self, persona_text: str | None) -> Any:
        """The state for a privacy-mode request, from the persona text it carries."""
        ...

    def run_rows(self, states: Sequence[Any]) -> contextlib.AbstractContextManager:
        """Every forward pass inside runs row i with `states[i]`."""
        ...

    def describe(self, state: Any) -> dict[str, Any]:
        """Reply fields about one row's state (a hub: {"adapters": {"names", "weights"}})."""
        ...

    def describe_change(self, before: Any, after: Any) -> dict[str, Any]:
        """Reply fields of a history upload about the user's state before and after it."""
        ...

    def unload(self) -> None:
        """Leave the LLM (a newer version was loaded beside it, `load(..., attach_to=...)`)."""
        ...


@dataclass(frozen=True)
class PluginSpec:
    """A plug-in's entry in the registry."""

    name: str
    """Its name (`MethodSpec.plugin` of its methods) and the command line option that names its folder."""
    methods: tuple[MethodSpec, ...]
    """The methods it adds."""
    load: Callable[..., MethodPlugin]
    """(folder, llm, encoder=None, cache_path=None, attach_to=None) -> the plug-in, loaded onto `llm` (beside
    `attach_to`, the version it replaces) and added to `llm.plugins`."""
    resolve: Callable[[str | Path], Path]
    """folder or run folder -> the folder to load (a run folder: the version its LATEST names)."""
    base_model: Callable[[str | Path], str]
    """folder -> the base LLM (name or path) it was made for, read without loading it."""
    task: Callable[[str | Path], str]
    """folder -> the LaMP task it was made for, read without loading it."""
    needs: str
    """What to pass when a method needs it and it is not loaded (one line of an error)."""

    def method_for(self, own: str) -> MethodSpec:
        """The plug-in's method that runs the weights of an `own` model (`pplug` -> `pplug+lora-hub`); a
        one-line ValueError naming the methods it combines with otherwise."""
        for spec in self.methods:
            if spec.weights_of == own:
                return spec
        combines = [f"'{m.weights_of}' (as {m.name})" for m in self.methods if m.weights_of]
        raise ValueError(f"the {self.name} plug-in combines with a {' or '.join(combines)} model; this one is "
                         f"'{own}'")


PLUGINS: dict[str, PluginSpec] = {}
"""Registered plug-ins by name."""


def register_plugin(spec: PluginSpec) -> PluginSpec:
    """Add a plug-in and its methods to the registry (a plug-in module calls this when imported)."""
    for m in spec.methods:
        if m.name in METHODS and METHODS[m.name] != m:
            raise ValueError(f"plug-in {spec.name!r}: method {m.name!r} is taken")
        METHODS[m.name] = m
    PLUGINS[spec.name] = spec
    return spec


BUNDLED_PLUGINS = {"hub": "pplug.hub.methods"}
"""The plug-ins that ship with pplug (also in pyproject.toml's entry points): found from a source checkout that
was never pip-installed, where entry points do not exist."""


@functools.cache
def load_plugins() -> None:
    """Import every plug-in module of the `pplug.methods` entry-point group and the bundled ones (each registers
    itself when imported). Once per process: reading the installed packages' entry points is not free, and
    servers ask on every `/health`."""
    import importlib

    found = {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP)}
    for name, module in {**BUNDLED_PLUGINS, **found}.items():
        if name not in PLUGINS:
            importlib.import_module(module.split(":")[0])


def get_plugin(name: str) -> PluginSpec:
    """A registered plug-in by name; ValueError listing the known ones."""
    if name not in PLUGINS:
        load_plugins()
    if name not in PLUGINS:
        raise ValueError(f"unknown plug-in {name!r}; installed: {', '.join(PLUGINS) or 'none'}")
    return PLUGINS[name]


def get_method(name: str | Method | MethodSpec) -> MethodSpec:
    """Look up a method by name (a plug-in's too); unknown names raise ValueError listing the known ones."""
    if isinstance(name, MethodSpec):
        return name
    key = name.value if isinstance(name, Method) else str(name).strip().lower()
    if key not in METHODS:
        load_plugins()
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[key]


def method_names() -> list[str]:
    """Every method's name, the plug-ins' included, in table order (for command line choices)."""
    load_plugins()
    return list(METHODS)


def require_plugin(llm: Any, method: str | MethodSpec) -> Any:
    """The loaded plug-in `method` runs through (None for a method without one); ValueError naming what to
    pass when it is not loaded onto `llm`."""
    spec = get_method(method)
    if spec.plugin is None:
        return None
    plugin = getattr(llm, "plugins", {}).get(spec.plugin)
    if plugin is None:
        raise ValueError(f"method '{spec.name}' needs {get_plugin(spec.plugin).needs}")
    return plugin


@contextlib.contextmanager
def method_rows(llm: Any, method: str | MethodSpec, profiles: Sequence[Sequence[dict]]) -> Iterator[Any]:
    """Calls on `llm` inside run as `method` runs them: through its plug-in, row by row (each row's user
    history in `profiles`), and without every other plug-in loaded onto `llm`. Yields the method's plug-in's
    per-row metadata (None for a method without one)."""
    spec = get_method(method)
    require_plugin(llm, spec)
    meta = None
    with contextlib.ExitStack() as stack:
        for name, plugin in getattr(llm, "plugins", {}).items():
            mine = stack.enter_context(plugin.row_context(spec if spec.plugin == name else None, profiles))
            meta = mine if spec.plugin == name else meta
        yield meta


def method_config(config: Any, method: str | MethodSpec) -> Any:
    """The PPlugConfig a trainable method uses (same fields, `use_user_embedding` set by the method).

    `none` and `lora-hub` have no trainable parts and so no PPlugConfig of their own, and a plug-in's method
    that runs another method's weights (`pplug+lora-hub`) trains that method; they raise ValueError here.
    """
    spec = get_method(method)
    if not spec.trainable:
        raise ValueError(f"method '{spec.name}' has no trainable parts: use the frozen LLM directly")
    if spec.plugin is not None and spec.weights_of is not None:
        raise ValueError(f"method '{spec.name}' runs a {spec.weights_of} model with the {spec.plugin} plug-in: "
                         f"train method '{spec.weights_of}'")
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


__all__ = ["BUNDLED_PLUGINS", "METHODS", "Method", "MethodPlugin", "MethodSpec", "PLUGINS", "PluginSpec", "RETRIEVERS",
           "get_method", "get_plugin", "load_plugins", "method_config", "method_names", "method_rows",
           "register_plugin", "require_plugin", "resolve_k"]
