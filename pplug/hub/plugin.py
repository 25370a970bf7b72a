"""What a LoRA hub does as a method plug-in (`pplug.methods.registry.MethodPlugin`): run each row of a batch
through the adapters its user retrieves, and tell a server what a user retrieves and how to say so in a reply.

    user history / persona text --retrieve--> state: Retrieval (adapters, weights) --run_rows--> merged adapter
    per row, every row in one forward pass; other methods run on the frozen LLM's own layers (`use("__base__")`)

`LoRAHub` (`pplug.hub.model`) inherits these; they only read what it has: `retrieve`, `retrieve_for_histories`,
`rows`, `use`, `config`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from .config import BASE, Retrieval


class HubPlugin:
    """The method plug-in face of `LoRAHub`."""

    alone = "lora-hub"
    """The method a hub runs on its frozen LLM without PPlug weights."""

    @property
    def task(self) -> str:
        return self.config.task

    def state_for_history(self, items: Sequence[dict]) -> Retrieval:
        """The adapters a stored user's history retrieves (through its persona text; none: the general one)."""
        return self.retrieve_for_histories([list(items)])[0]

    def state_for_persona(self, persona_text: str | None) -> Retrieval:
        """The adapters a privacy-mode request's own persona text retrieves (none: the general one)."""
        return self.retrieve([persona_text])[0]

    def run_rows(self, states: Sequence[Retrieval]) -> contextlib.AbstractContextManager:
        """Every forward pass inside runs row i through `states[i]`'s (merged) adapters."""
        return self.rows(self.adapters_for(states))

    @contextlib.contextmanager
    def row_context(self, method: Any, profiles: Sequence[Sequence[dict]]) -> Iterator[list[Retrieval] | None]:
        """Calls on the LLM inside run as `method` runs them: a hub method -> each row through the adapters its
        user's persona text retrieves, yielding the retrievals; any other method (None) -> the frozen LLM's own
        layers, exactly as with no hub loaded. A user with no history (cold start) gets the general adapter."""
        if method is None:
            with self.use(BASE):
                yield None
            return
        retrievals = self.retrieve_for_histories([list(p) for p in profiles])
        with self.run_rows(retrievals):
            yield retrievals

    @staticmethod
    def describe(state: Retrieval) -> dict[str, Any]:
        """What a reply says about a row's adapters: {"adapters": {"names": [...], "weights": [...]}}."""
        return {"adapters": {"names": list(state.adapters), "weights": [round(float(w), 6) for w in state.weights]}}

    @staticmethod
    def describe_change(before: Retrieval, after: Retrieval) -> dict[str, Any]:
        """What a history upload's reply says: the adapters and their weights before and after it."""
        return {"adapters": {"before": before.adapters, "after": after.adapters,
                             "weights": {"before": before.weights, "after": after.weights}}}


__all__ = ["HubPlugin"]
