"""PrefixedModel: a PPlugModel whose soft prompts are already computed, decoding like the model itself.

`pplug serve` computes the soft prompts of many users' rows in one embedder call, from cached history
embeddings; each group of rows then decodes through a `PrefixedModel`, which reads those (B, P, D) prompts
instead of running the embedder and otherwise is the model: the same `choice_logprobs` (so the same label
rules, `pplug.modeling.label_rules`) and `generate`, and the `llm`, `config` and `history_encoder` that
`pplug.decode.inference.decode` reads.
"""

from __future__ import annotations

from typing import Any

import torch

from pplug.core.batch import PPlugBatch

from .model import PPlugModel


class PrefixedModel:
    """`model` decoding from the precomputed `soft_prompts` (the interface of PPlugModel that decoding reads).

    Args:
        model: the model whose embedder computed `soft_prompts`.
        soft_prompts: (B, P, D), row i for row i of every batch given.
        generator: generates greedy rows instead of the frozen LLM, from the same soft prompts (`pplug serve
            --engine vllm`: a `pplug.serve.vllm.VLLMGenerator`); None: the frozen LLM.
        history_prior: (B, C) `PPlugModel.history_prior` of the same rows, computed beside the soft prompts
            (`history_mix_prior` "encoder" / "attention"); None: computed from each batch where the config needs it.
    """

    def __init__(self, model: PPlugModel, soft_prompts: torch.Tensor, generator: Any = None,
                 history_prior: torch.Tensor | None = None):
        self.model, self.soft_prompts, self.generator = model, soft_prompts, generator
        self.history_prior = history_prior
        self.llm, self.config, self.history_encoder = model.llm, model.config, model.history_encoder
        self.soft_prompt_position = model.soft_prompt_position

    @property
    def device(self) -> torch.device:
        return self.model.device

    def prefix(self, batch: PPlugBatch) -> torch.Tensor:
        """The soft prompts, (B, P, D); ValueError when `batch` has another number of rows."""
        if len(batch.prompts) != self.soft_prompts.shape[0]:
            raise ValueError(f"{len(batch.prompts)} rows for {self.soft_prompts.shape[0]} precomputed soft prompts")
        return self.soft_prompts

    def choice_logprobs(self, batch: PPlugBatch, choices: list[str]) -> torch.Tensor:
        """`PPlugModel.choice_logprobs` from the precomputed soft prompts: (B, C)."""
        return self.model.choice_logprobs(batch, choices, prefix=self.prefix(batch), history_prior=self.history_prior)

    def generate(self, batch: PPlugBatch, max_new_tokens: int | None = None, num_beams: int = 1,
                 **kwargs: Any) -> list[str]:
        """`PPlugModel.generate` from the precomputed soft prompts; greedy rows on `generator` if there is one."""
        if self.generator is not None and num_beams == 1 and not kwargs:  # HF generate options stay on HF
            budget = self.model.default_max_new_tokens if max_new_tokens is None else max_new_tokens
            return self.generator.generate(self.prefix(batch), batch.prompts, max_new_tokens=budget,
                                           position=self.soft_prompt_position)
        return self.model.generate(batch, max_new_tokens, num_beams, prefix=self.prefix(batch), **kwargs)


__all__ = ["PrefixedModel"]
