"""What decoding reads of a model: the one interface `PPlugModel`, the frozen LLM alone
(`pplug.decode.inference.FrozenBaseline`) and a model with precomputed soft prompts (`PrefixedModel`, what
`pplug serve` decodes with) share, so `pplug.decode` and `pplug.serve` take any of them. A method plug-in (the
LoRA hub) changes how rows run through the frozen LLM, not this interface (`pplug.methods.registry`)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from pplug.core.batch import PPlugBatch


@runtime_checkable
class Personalizer(Protocol):
    """A model rows of many users decode through: generation and label scoring over one `PPlugBatch`."""

    llm: Any
    """The frozen LLM (`pplug.modeling.llm.FrozenLLM`): its prompt budget, tokenizer and loaded plug-ins."""

    @property
    def device(self) -> torch.device: ...

    def generate(self, batch: PPlugBatch, max_new_tokens: int | None = None, num_beams: int = 1,
                 **kwargs: Any) -> list[str]:
        """One continuation per row (greedy, or beam search)."""
        ...

    def choice_logprobs(self, batch: PPlugBatch, choices: list[str]) -> torch.Tensor:
        """(B, C) log p(choice | row), summed over each choice's tokens."""
        ...


__all__ = ["Personalizer"]
