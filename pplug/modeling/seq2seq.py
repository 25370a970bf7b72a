"""What an encoder-decoder (T5-style) frozen LLM does differently when scoring choices: the encoder reads
[soft prompt; prompt] once per row, and every choice is decoded from that one encoding."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def seq2seq_choice_logprobs(llm: nn.Module, encoder_inputs: dict[str, torch.Tensor],
                            c_ids: list[list[int]]) -> torch.Tensor:
    """(B, C) log p(choice | soft prompt, prompt) summed over each choice's tokens, for a seq2seq `FrozenLLM`.

    Args:
        llm: the `FrozenLLM` (seq2seq).
        encoder_inputs: `llm.build_inputs(prefix, prompts)`: the encoder's "inputs_embeds" (B, S, D) and
            "attention_mask" (B, S).
        c_ids: each choice's token ids (no EOS).
    """
    from transformers.modeling_outputs import BaseModelOutput

    b, c = encoder_inputs["inputs_embeds"].shape[0], len(c_ids)
    enc = llm.model.get_encoder()(inputs_embeds=encoder_inputs["inputs_embeds"],
                                  attention_mask=encoder_inputs["attention_mask"])
    hidden = enc.last_hidden_state.repeat_interleave(c, dim=0)  # (B*C, S, D): one encoding per row
    mask = encoder_inputs["attention_mask"].repeat_interleave(c, dim=0)
    labels = torch.full((b * c, max(len(t) for t in c_ids)), -100, dtype=torch.long)  # (B*C, T)
    for i in range(b * c):
        t = c_ids[i % c]
        labels[i, : len(t)] = torch.tensor(t)
    labels = labels.to(llm.device)
    logits = llm.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask,
                       labels=labels, use_cache=False).logits.float()  # (B*C, T, V)
    lp = torch.log_softmax(logits, dim=-1)
    tok = lp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (labels != -100)
    return tok.sum(-1).view(b, c)


__all__ = ["seq2seq_choice_logprobs"]
