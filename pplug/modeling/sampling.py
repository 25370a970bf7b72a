"""Generating from a frozen causal LLM, one generator per sampled sequence: what `FrozenLLM.sample` runs, and
the decoding loop `FrozenLLM.generate` runs after a shared prompt prefill.

- `RowSampler`: a logits processor that draws each sequence's token with its own temperature, top-p and
  `torch.Generator`, so a row's samples do not depend on the rest of the batch; `row_sampler` makes the one
  for a batch's per-row settings.
- `sample_ids`: the sampled token ids, through `sample_causal` or HF generate (seq2seq).
- `sample_causal`: the loop for causal LMs. B prompts are prefilled once and the KV cache is copied to the
  S sampled sequences (prefill is most of the cost for short outputs); `continue_sequences` is that loop from a
  cache already filled (`prefill.after_prompt_sequences`: one prefill per distinct prompt).
- `left_padded_inputs`: a causal batch laid out for generation, [pad; soft prompt; prompt] or [pad; prompt;
  soft prompt].
- `FirstLineStop`: a sequence stops once its first non-empty line is complete.
- `row_seed`: stable per-row / per-sample seeds.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn


class RowSampler:
    """A HF logits processor that samples each sequence with its own temperature, top-p and generator.

    It returns logits that are -inf everywhere except at the drawn token, so a greedy `generate` loop takes
    exactly that token. The draw is inverse-CDF sampling over the (stable-)sorted nucleus with one uniform
    number from the sequence's generator per step: the same logits and the same generator give the same
    token whatever else is in the batch.
    """

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]) -> None:
        self.temperatures = torch.tensor([float(t) for t in temperatures])  # (S,)
        self.top_ps = torch.tensor([float(p) for p in top_ps])  # (S,)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        s = scores.shape[0]  # (S, V)
        if s != len(self.generators):
            raise RuntimeError(f"RowSampler: {s} sequences, {len(self.generators)} generators")
        device = scores.device
        probs = torch.softmax(scores.float() / self.temperatures.to(device).unsqueeze(-1), dim=-1)  # (S, V)
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)  # (S, V)
        before = sorted_p.cumsum(dim=-1) - sorted_p  # mass strictly before each token
        keep = before < self.top_ps.to(device).unsqueeze(-1)  # the first token is always kept
        sorted_p = sorted_p * keep
        cdf = sorted_p.cumsum(dim=-1)
        cdf = cdf / cdf[:, -1:]  # (S, V), ends at 1
        u = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(device)  # (S,)
        pos = torch.searchsorted(cdf, u.unsqueeze(-1).to(cdf.dtype), right=True).squeeze(-1)  # first cdf > u
        pos = torch.minimum(pos, keep.sum(dim=-1) - 1)  # rounding at the top end stays inside the nucleus
        token = order.gather(-1, pos.unsqueeze(-1))  # (S, 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token, 0.0)


def row_sampler(b: int, num_samples: int | Sequence[int], temperature: float | Sequence[float],
                top_p: float | Sequence[float], seed: int | Sequence[int]) -> tuple[list[int], RowSampler]:
    """What `FrozenLLM.sample` draws for B rows: (owner, sampler), owner[s] the row of sampled sequence s (row i
    repeated num_samples[i] times, so rows may ask for different counts) and the `RowSampler` that draws
    sequence s with its row's temperature and top-p from its own generator, seeded `row_seed(row seed, s's
    index within the row)`. Every setting is one value or one per row (an int seed gives row i the seed
    `row_seed(seed, i)`); ValueError for an invalid one."""
    counts, temps, tops = (per_row(v, b, name) for v, name in
                           ((num_samples, "num_samples"), (temperature, "temperature"), (top_p, "top_p")))
    seeds = [row_seed(seed, i) for i in range(b)] if isinstance(seed, int) else per_row(seed, b, "seed")
    if any(int(n) < 0 for n in counts) or any(t <= 0 for t in temps) or any(not 0 < p <= 1 for p in tops):
        raise ValueError("sample: num_samples must be >= 0, temperature > 0 and top_p in (0, 1]")
    owner = [i for i in range(b) for _ in range(int(counts[i]))]
    index = [j for i in range(b) for j in range(int(counts[i]))]
    sampler = RowSampler([temps[i] for i in owner], [tops[i] for i in owner],
                         [row_seed(seeds[i], j) for i, j in zip(owner, index)])
    return owner, sampler


def left_padded_inputs(embed: Callable[[torch.Tensor], torch.Tensor], prefix: torch.Tensor,
                       p_ids: list[list[int]], pad_id: int, after: bool) -> dict[str, torch.Tensor]:
    """A causal LM's generation inputs: `inputs_embeds` (B, P + L, D) laid out [pad; prefix; prompt], or [pad;
    prompt; prefix] `after` the prompt, so every row continues from its own last position, and the
    `attention_mask` (B, P + L) that hides the padding. `embed` maps token ids to the LLM's input embeddings."""
    b, p = prefix.shape[0], prefix.shape[1]
    length = max(len(r) for r in p_ids)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    mask = torch.zeros(b, p + length, dtype=torch.long)
    for i, r in enumerate(p_ids):
        ids[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, length - len(r):] = 1  # the prefix sits right before (or after) the row's real tokens
    tok_emb = embed(ids)  # (B, L, D)
    rows = []
    for i, r in enumerate(p_ids):
        pad = length - len(r)
        rows.append(torch.cat([tok_emb[i, :pad], tok_emb[i, pad:], prefix[i]] if after
                              else [tok_emb[i, :pad], prefix[i], tok_emb[i, pad:]], dim=0))
    return {"inputs_embeds": torch.stack(rows), "attention_mask": mask.to(tok_emb.device)}


def sample_ids(model: nn.Module, inputs: dict, owner: list[int], sampler: RowSampler, max_new_tokens: int,
               stop: FirstLineStop | None, pad_id: int, eos_id: int, is_seq2seq: bool,
               keep_arg: str | None = None) -> torch.Tensor:
    """(S, T) token ids of the S sampled sequences (`owner[s]` = the row of sequence s) of the HF model `model`,
    from its generation `inputs` for the B rows (`inputs_embeds`, `attention_mask`). Causal LMs run
    `sample_causal` (each row's prompt read once, its KV cache copied to the row's sequences: prefill is most
    of the cost for short outputs); seq2seq models run HF generate on the rows repeated, with `sampler` as
    the logits processor."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    rows = torch.tensor(owner, device=inputs["attention_mask"].device)  # (S,)
    if not is_seq2seq:
        return sample_causal(model, inputs, rows, sampler, max_new_tokens, stop, pad_id, eos_id, keep_arg)
    inputs = {k: v.index_select(0, rows.to(v.device)) for k, v in inputs.items()}  # (S, ...)
    extra = {"stopping_criteria": StoppingCriteriaList([stop])} if stop is not None else {}
    return model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
                          logits_processor=LogitsProcessorList([sampler]), pad_token_id=pad_id, eos_token_id=eos_id,
                          **extra)


def sample_causal(model: nn.Module, inputs: dict, owner: torch.Tensor, sampler: RowSampler, max_new_tokens: int,
                  stop: FirstLineStop | None, pad_id: int, eos_id: int, keep_arg: str | None = None) -> torch.Tensor:
    """Sampling loop with a shared prefill: B prompts run once, the KV cache is copied to the S sequences
    (`owner[s]` = row of sequence s). Returns (S, T) generated token ids, padded after EOS / stop.

    `model` is the HF causal LM, `inputs` its left-padded `inputs_embeds` / `attention_mask`; `keep_arg` its
    `logits_to_keep` keyword, if it has one."""
    mask = inputs["attention_mask"]  # (B, L) left-padded
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    last_only = {keep_arg: 1} if keep_arg else {}  # the prefill's next token reads the last position
    out = model(inputs_embeds=inputs["inputs_embeds"], attention_mask=mask, position_ids=pos, use_cache=True,
                **last_only)
    return continue_sequences(model, out.past_key_values, out.logits[:, -1], mask, pos[:, -1] + 1, owner, sampler,
                              max_new_tokens, stop, pad_id, eos_id)


def continue_sequences(model: nn.Module, cache: object, logits: torch.Tensor, mask: torch.Tensor,
                       next_pos: torch.Tensor, owner: torch.Tensor, sampler: RowSampler | None, max_new_tokens: int,
                       stop: FirstLineStop | None, pad_id: int, eos_id: int) -> torch.Tensor:
    """The decoding loop from B rows already read: `cache` their KV cache, `logits` (B, V) after each row's last
    position, `mask` (B, L) its attention mask and `next_pos` (B,) the position of its next token. The cache is
    copied to the S sequences (`owner[s]` = row of sequence s); each draws with `sampler`, or takes the most
    likely token where it is None (greedy). Returns (S, T) token ids, padded after EOS / stop."""
    cache.batch_select_indices(owner)  # (B, ...) -> (S, ...)
    logits = logits.float()[owner]  # (S, V)
    mask, next_pos = mask[owner], next_pos[owner]  # (S, L), (S,)
    s = owner.shape[0]
    cache_arg = cache_argument(model)
    done = torch.zeros(s, dtype=torch.bool, device=owner.device)
    tokens = []
    for _ in range(max_new_tokens):
        tok = (logits if sampler is None else sampler(None, logits)).argmax(dim=-1)  # (S,) the next token
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens.append(tok)
        done = done | (tok == eos_id)
        if stop is not None:
            done = done | stop(tok.unsqueeze(-1), None)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=tok.unsqueeze(-1), attention_mask=mask, position_ids=next_pos.unsqueeze(-1),
                    use_cache=True, **{cache_arg: cache})
        next_pos = next_pos + 1
        logits = out.logits[:, -1].float()
    return torch.stack(tokens, dim=1) if tokens else torch.zeros(s, 0, dtype=torch.long)


@functools.cache
def forward_arguments(model_class: type) -> frozenset[str]:
    """The keyword arguments a model class's forward takes (read once per class: prefill runs every step)."""
    return frozenset(inspect.signature(model_class.forward).parameters)


def cache_argument(model: nn.Module) -> str:
    """The keyword a causal LM's forward takes a key/value cache under ("cache" in recent transformers)."""
    return "cache" if "cache" in forward_arguments(type(model)) else "past_key_values"


class FirstLineStop:
    """Per-sequence stopping criterion: done once the first non-empty line has ended (a token with a newline
    after some non-whitespace text). `clean_generation` keeps only that line, so stopping there changes no
    greedy or sampled output and saves the tokens LLMs write past the answer. Stateful: one instance per
    generation. `per_candidate` (beam search): stateless, each row is a candidate's generated tokens, so a
    beam ends with its line and the beams compete as finished lines, the answer `clean_generation` keeps."""

    def __init__(self, newline: torch.Tensor, content_before_newline: torch.Tensor, content: torch.Tensor,
                 per_candidate: bool = False) -> None:
        self.newline, self.before, self.content = newline, content_before_newline, content  # (V,) bool each
        self.seen: torch.Tensor | None = None  # (S,) bool: some non-whitespace text generated so far
        # beam search: HF ranks candidates afresh every step and hands each one's generated tokens (and nothing
        # else: the prompt goes in as embeddings), so the state is read off each row instead of kept
        self.per_candidate = per_candidate

    @staticmethod
    def token_tables(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(newline, content_before_newline, content): (V,) bool tables of every token of `tokenizer`."""
        special = set(tokenizer.all_special_ids)  # dropped from the decoded text: never content
        texts = ["" if i in special else t for i, t in
                 enumerate(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))]
        nl = torch.tensor(["\n" in t for t in texts])
        before = torch.tensor([t.split("\n", 1)[0].strip() != "" for t in texts])
        content = torch.tensor([t.strip() != "" for t in texts])
        return nl, before, content

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        vocab = self.newline.shape[0]
        last = input_ids[:, -1].cpu().clamp(0, vocab - 1)  # (S,)
        if self.per_candidate:  # each row's own tokens say whether it has text yet: rows are re-ranked every step
            seen = self.content[input_ids[:, :-1].cpu().clamp(0, vocab - 1)].any(-1)
        else:  # one row per sequence throughout: keep what was seen, copy only the last tokens off the device
            seen = self.seen if self.seen is not None else torch.zeros(last.shape[0], dtype=torch.bool)
            self.seen = seen | self.content[last]  # for the next step; this one reads the text before `last`
        return (self.newline[last] & (seen | self.before[last])).to(input_ids.device)


def row_seed(seed: int, key: object) -> int:
    """A 63-bit seed derived from (seed, key), stable across runs and platforms (sha256, not Python's hash)."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def per_row(value, b: int, name: str) -> list:
    if isinstance(value, (int, float)):
        return [value] * b
    value = list(value)
    if len(value) != b:
        raise ValueError(f"sample: {name} has {len(value)} values for {b} rows")
    return value


__all__ = ["FirstLineStop", "RowSampler", "cache_argument", "continue_sequences", "forward_arguments",
           "left_padded_inputs", "per_row", "row_sampler", "row_seed", "sample_causal", "sample_ids"]
