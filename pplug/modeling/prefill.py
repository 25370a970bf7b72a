"""One prompt prefill for many soft prompts: a causal LLM's keys and values of each distinct prompt, computed
once without gradient and shared by every row that reads that prompt.

    prompts --distinct--> U prompt bodies --left-padded, no-grad forward--> keys/values (U, H, L, d) per layer
    rows (B, each names its prompt) --packed per prompt--> (U', C, D): the continuations of all rows that read
        one prompt side by side in one sequence --forward of those C positions only--> logits per row

This works because the LLM is frozen and the soft prompt comes after the prompt (`soft_prompt_position:
after_prompt`): the prompt's keys and values then depend on nothing trainable, so a training step runs the
forward and backward passes over the few soft vectors and target tokens alone, and the k history-drop copies
of a question, the methods scored on one question, or the many users asked about one item read one prefill.

Why the rows of one prompt are packed along the sequence rather than the batch: a batch row per continuation
would copy the prompt's keys and values once per row (80 copies of a 128-token cache at k = 10, batch 8), which
costs more than the continuations themselves on a CPU. Packed, each sequence reads its prompt's cache once, and a
4D attention mask keeps the continuations apart: a continuation sees its prompt and its own earlier positions,
nothing of its neighbours. A prompt with more continuations than `max_packed` positions is split over several
sequences, each reading the same cache.

Why it is exact: prompts are left-padded, so every prompt ends at the same column; padded keys are masked out,
and each continuation's position ids go on from its prompt's own length. The logits equal those of one forward
over [prompt; soft prompt; target] (tests/test_prefill.py checks it to 1e-5 in float32).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .sampling import cache_argument, continue_sequences, forward_arguments


@dataclass
class PromptKV:
    """The frozen LLM's keys and values of U distinct prompts, and which of them each of B rows reads."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    """Per layer, (keys, values), each (U, H_kv, L, d_head): the left-padded prompts' cache."""
    mask: torch.Tensor
    """(U, L) long: 1 on each prompt's real tokens (right-aligned), 0 on its left padding."""
    row_prompt: torch.Tensor
    """(B,) long: the distinct prompt each row reads."""
    config: object = None
    """The LLM's config (the cache class reads its layer types)."""
    last_logits: torch.Tensor | None = None
    """(U, V): the logits after each prompt's last token (what a row without a soft prompt reads)."""

    @property
    def num_rows(self) -> int:
        return int(self.row_prompt.shape[0])

    @property
    def num_prompts(self) -> int:
        return int(self.mask.shape[0])

    def cache(self, prompts: torch.Tensor) -> object:
        """A transformers cache holding the keys and values of the distinct prompts `prompts` (one per sequence
        of a forward; a prompt may repeat). The cache grows by the forward's own keys, so each forward gets a
        fresh one; the stored keys and values are only copied when `prompts` is not 0..U-1 in order."""
        from transformers import DynamicCache

        same = prompts.shape[0] == self.num_prompts and bool((prompts == torch.arange(
            self.num_prompts, device=prompts.device)).all())
        data = [(k, v) if same else (k.index_select(0, prompts), v.index_select(0, prompts)) for k, v in self.layers]
        return DynamicCache(ddp_cache_data=data, config=self.config)


def distinct_prompts(prompt_ids: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """(the distinct token-id prompts in first-seen order, each row's index among them)."""
    seen: dict[tuple[int, ...], int] = {}
    rows = []
    for ids in prompt_ids:
        rows.append(seen.setdefault(tuple(ids), len(seen)))
    return [list(p) for p in seen], rows


class PrefillStore:
    """Prompt prefills kept across calls, so that rows read in separate passes share them: the methods an
    evaluation scores on the same questions (`pplug.decode.evaluate`), or a user asked about again. Bounded:
    the least recently read prompts go first once the stored keys and values pass `max_bytes`.

    Valid only while the LLM's weights stay as they were: a method that changes them (a LoRA adapter) must
    not read it (`shared_prefill` around the passes that may).
    """

    def __init__(self, max_bytes: int = 2 * 2**30) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[int, ...], tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]]
        self.entries = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, ids: tuple[int, ...]):
        entry = self.entries.get(ids)
        if entry is not None:
            self.entries.move_to_end(ids)
        return entry

    def put(self, ids: tuple[int, ...], layers: list[tuple[torch.Tensor, torch.Tensor]], last: torch.Tensor) -> None:
        size = sum(k.nbytes + v.nbytes for k, v in layers) + last.nbytes
        if size > self.max_bytes:
            return
        self.entries[ids] = (layers, last)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (old, old_last) = self.entries.popitem(last=False)
            self.bytes -= sum(k.nbytes + v.nbytes for k, v in old) + old_last.nbytes


@contextlib.contextmanager
def shared_prefill(llm: nn.Module, max_bytes: int = 2 * 2**30) -> Iterator[PrefillStore]:
    """Within the block, `llm`'s after-the-prompt passes keep and reuse each prompt's prefill (`PrefillStore`)."""
    store = PrefillStore(max_bytes)
    before, llm.prefill_store = getattr(llm, "prefill_store", None), store
    try:
        yield store
    finally:
        llm.prefill_store = before


@torch.no_grad()
def prefill(model: nn.Module, embed: nn.Module, prompt_ids: Sequence[Sequence[int]], pad_id: int,
            store: PrefillStore | None = None, share: bool = True) -> PromptKV:
    """The keys and values of every distinct prompt of `prompt_ids` (one per row), left-padded, no gradient.

    Args:
        model: a causal LM (`transformers` `*ForCausalLM`), frozen.
        embed: its input embedding.
        prompt_ids: each row's prompt token ids (non-empty).
        pad_id: kept for callers; the padding is masked out, so what it holds does not matter.
        store: prompts prefilled by earlier calls: read from it, and the new ones added to it.
        share: False where rows of one prompt must not share its keys and values (each row through its own
            LoRA adapter, `pplug.hub.LoRAHub.rows`): every row prefills its own prompt, no store.
    """
    distinct, rows = distinct_prompts(prompt_ids) if share else ([list(p) for p in prompt_ids],
                                                                 list(range(len(prompt_ids))))
    device = embed.weight.device
    if store is None or not share:
        heads = [embed(torch.tensor(p, dtype=torch.long, device=device)) for p in distinct]  # (n_u, D) each
        return prefill_embeds(model, heads, rows)
    # each prompt's entry, held here for this call: storing the missing ones may evict the ones just read
    held = {tuple(p): store.get(tuple(p)) for p in distinct}
    missing = [p for p in distinct if held[tuple(p)] is None]
    store.hits, store.misses = store.hits + len(distinct) - len(missing), store.misses + len(missing)
    if missing:
        kv = prefill_embeds(model, [embed(torch.tensor(p, dtype=torch.long, device=device)) for p in missing],
                            range(len(missing)))
        length = kv.mask.shape[1]
        for u, p in enumerate(missing):  # each prompt's own columns (H, n_u, d), without the batch's padding
            own = [(k[u, :, length - len(p):], v[u, :, length - len(p):]) for k, v in kv.layers]
            held[tuple(p)] = (own, kv.last_logits[u])
            store.put(tuple(p), [(k.clone(), v.clone()) for k, v in own], kv.last_logits[u].clone())
    entries = [held[tuple(p)] for p in distinct]
    # the distinct prompts left-padded again, as prefill_embeds lays them out: (U, H, L, d) per layer
    length = max(len(p) for p in distinct)
    mask = torch.zeros(len(distinct), length, dtype=torch.long, device=device)
    for u, p in enumerate(distinct):
        mask[u, length - len(p):] = 1
    layers = []
    for layer in range(len(entries[0][0])):
        k0 = entries[0][0][layer][0]  # (H, n_0, d)
        k_all = k0.new_zeros(len(distinct), k0.shape[0], length, k0.shape[-1])
        v_all = torch.zeros_like(k_all)
        for u, ((own, _), p) in enumerate(zip(entries, distinct)):
            k_all[u, :, length - len(p):], v_all[u, :, length - len(p):] = own[layer]
        layers.append((k_all, v_all))
    return PromptKV(layers, mask, torch.tensor(rows, dtype=torch.long, device=device), getattr(model, "config", None),
                    torch.stack([entry[1] for entry in entries]))


@torch.no_grad()
def prefill_embeds(model: nn.Module, heads: Sequence[torch.Tensor], row_prompt: Sequence[int]) -> PromptKV:
    """`prefill` of sequences given as input embeddings: head u (n_u, D), n_u >= 1, left-padded, no gradient; row
    r reads head `row_prompt[r]`. For heads that already hold a soft prompt ([soft prompt; prompt] in front),
    whose keys and values differ per user but are shared by the continuations of one row (its answer choices)."""
    device = heads[0].device
    length = max(int(h.shape[0]) for h in heads)
    embeds = heads[0].new_zeros(len(heads), length, heads[0].shape[-1])
    mask = torch.zeros(len(heads), length, dtype=torch.long, device=device)
    for u, h in enumerate(heads):
        embeds[u, length - h.shape[0]:] = h
        mask[u, length - h.shape[0]:] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    one_logit = {"logits_to_keep": 1} if _keeps_logits(model) else {}
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=True, **one_logit)
    return PromptKV(_layers(out.cache if "cache" in out else out.past_key_values), mask,
                    torch.tensor(list(row_prompt), dtype=torch.long, device=device), getattr(model, "config", None),
                    out.logits[:, -1])


def run_after(model: nn.Module, kv: PromptKV, pieces: Sequence[torch.Tensor], keep: Sequence[torch.Tensor],
              max_packed: int = 512) -> list[torch.Tensor]:
    """Logits of each row's continuation read after its cached prompt: row i's `pieces[i]` (n_i, D) input
    embeddings ([soft prompt; target]), and of them only the positions `keep[i]` (k_i,) (e.g. those that predict
    its target tokens). Returns, per row, (k_i, V) logits, with gradients to the pieces.

    Args:
        model: the causal LM the cache was made with.
        kv: the prompts' keys and values and each row's prompt (`prefill`).
        pieces: one (n_i, D) tensor per row, in the cache's row order.
        keep: one long tensor of positions (0 <= p < n_i) per row.
        max_packed: the most continuation positions one sequence packs (bounds the (C, L + C) attention mask).
    """
    if len(pieces) != kv.num_rows or len(keep) != kv.num_rows:
        raise ValueError(f"run_after: {len(pieces)} pieces and {len(keep)} keeps for {kv.num_rows} rows")
    device = kv.mask.device
    sizes = [int(p.shape[0]) for p in pieces]
    row_prompt = kv.row_prompt.tolist()
    # sequences: each holds consecutive rows of one prompt, at most max_packed positions (one row at least)
    seq_prompt: list[int] = []  # the prompt each sequence reads
    filled: list[int] = []  # positions taken in each sequence
    open_seq: dict[int, int] = {}  # prompt -> the sequence its next row may join
    where: list[tuple[int, int]] = []  # row -> (sequence, start)
    for i, u in enumerate(row_prompt):
        j = open_seq.get(u)
        if j is None or filled[j] + sizes[i] > max_packed:
            open_seq[u] = j = len(seq_prompt)
            seq_prompt.append(u)
            filled.append(0)
        where.append((j, filled[j]))
        filled[j] += sizes[i]
    length = max(filled)
    prompt_len = kv.mask.shape[1]
    embeds = pieces[0].new_zeros(len(seq_prompt), length, pieces[0].shape[-1])
    position_ids = torch.zeros(len(seq_prompt), length, dtype=torch.long, device=device)
    allow = torch.zeros(len(seq_prompt), length, prompt_len + length, dtype=torch.bool, device=device)
    allow[:, torch.arange(length), prompt_len + torch.arange(length)] = True  # padding reads itself, never NaN
    lengths = kv.mask.sum(-1)
    for r, (s_idx, start) in enumerate(where):
        u, n = row_prompt[r], sizes[r]
        span = slice(start, start + n)
        position_ids[s_idx, span] = lengths[u] + torch.arange(n, device=device)
        allow[s_idx, span, :prompt_len] = kv.mask[u].bool()  # its prompt, without the left padding
        allow[s_idx, span, prompt_len + start: prompt_len + start + n] = torch.ones(
            n, n, dtype=torch.bool, device=device).tril()  # itself, causally; never its neighbours
    # the pieces carry the gradients: write them in with index_put, not in-place slices of a leaf
    seq_idx = torch.cat([torch.full((n,), j, device=device) for (j, _), n in zip(where, sizes)])
    pos_idx = torch.cat([start + torch.arange(n, device=device) for (_, start), n in zip(where, sizes)])
    embeds = embeds.index_put((seq_idx, pos_idx), torch.cat(list(pieces)).to(embeds.dtype))
    wanted = sorted({where[r][1] + int(p) for r in range(kv.num_rows) for p in keep[r].tolist()})
    column = {p: c for c, p in enumerate(wanted)}
    extra = {"logits_to_keep": torch.tensor(wanted, device=device)} if _keeps_logits(model) else {}
    out = model(inputs_embeds=embeds, attention_mask=allow[:, None], position_ids=position_ids, use_cache=True,
                **{cache_argument(model): kv.cache(torch.tensor(seq_prompt, device=device))}, **extra)
    logits = out.logits if extra else out.logits[:, wanted]  # (S, K, V): the wanted columns
    return [logits[where[r][0], [column[where[r][1] + int(p)] for p in keep[r].tolist()]]
            for r in range(kv.num_rows)]


# --- the soft prompt after the prompt: what FrozenLLM runs for `soft_prompt_position: after_prompt` ---

SOFT_PROMPT_POSITIONS = ("prefix", "after_prompt")
"""Where the soft prompt sits: in front of the prompt (PPlug as published) or after it, where it can share the
prompt's prefill (causal LLMs only)."""


def check_position(position: str, is_seq2seq: bool) -> str:
    """`position` if the LLM can take it; a one-line ValueError otherwise."""
    if position not in SOFT_PROMPT_POSITIONS:
        raise ValueError(f"soft_prompt_position must be one of {list(SOFT_PROMPT_POSITIONS)}, got {position!r}")
    if position == "after_prompt" and is_seq2seq:
        raise ValueError("soft_prompt_position 'after_prompt' needs a causal LLM; a seq2seq LLM reads its soft "
                         "prompt in front of the encoder's input: use 'prefix'")
    return position


def _teacher_forced(llm: nn.Module, soft: torch.Tensor, tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A row's continuation [soft; t_0 .. t_{T-2}] ((P + T - 1, D)) and the positions whose logits predict
    t_0 .. t_{T-1} (P - 1 + j predicts t_j)."""
    p = soft.shape[0]
    piece = torch.cat([soft, llm.embed(torch.tensor(tokens[:-1], dtype=torch.long))])
    return piece, torch.arange(p - 1, p - 1 + len(tokens))


def after_prompt_loss(llm: nn.Module, prefix: torch.Tensor, p_ids: list[list[int]], t_ids: list[list[int]],
                      choice_ids: list[int] | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`FrozenLLM.forward` with the soft prompt after the prompt: the mean token cross-entropy of the targets
    given [prompt; soft prompt], the prompts' prefill shared by the rows that read the same prompt.

    Args:
        llm: the `FrozenLLM` (causal).
        prefix: (B, P, D) soft prompts, P >= 1, in the LLM's dtype.
        p_ids, t_ids: each row's prompt and target token ids (targets end with EOS).
        choice_ids: single-token answers' ids: also return the (B, C) log-probabilities at the position that
            predicts the target's first token.
    """
    kv = prefill(llm.model, llm.model.get_input_embeddings(), p_ids, llm.pad_id, share=llm.rows_share_prompts)
    pieces, keep = zip(*(_teacher_forced(llm, prefix[i], t) for i, t in enumerate(t_ids)))
    logits = run_after(llm.model, kv, pieces, keep)  # B x (T_i, V)
    flat = torch.cat(logits).float()  # (sum T_i, V)
    gold = torch.tensor([tok for t in t_ids for tok in t], dtype=torch.long, device=flat.device)
    loss = torch.nn.functional.cross_entropy(flat, gold)  # the mean over every target token, as with `prefix`
    if choice_ids is None:
        return loss
    first = torch.stack([lg[0] for lg in logits]).float()  # (B, V): each row's first target position
    return loss, torch.log_softmax(first, dim=-1)[:, choice_ids]


@torch.no_grad()
def after_prompt_choices(llm: nn.Module, prefix: torch.Tensor, p_ids: list[list[int]],
                         c_ids: list[list[int]]) -> torch.Tensor:
    """`FrozenLLM.choice_logprobs` with the soft prompt after the prompt: (B, C) log p(choice | prompt, soft
    prompt) summed over each choice's tokens. Single-token choices read one position per row; a multi-token
    choice set reads [soft_i; choice_c] for every row and choice, all B * C of them after one prefill per
    distinct prompt."""
    b, c, p = len(p_ids), len(c_ids), prefix.shape[1]
    model, embed = llm.model, llm.model.get_input_embeddings()
    store = getattr(llm, "prefill_store", None)
    if all(len(ids) == 1 for ids in c_ids):
        kv = prefill(model, embed, p_ids, llm.pad_id, store, llm.rows_share_prompts)
        if p == 0:  # no soft prompt (the frozen LLM alone): the prompt's own last logits
            lp = torch.log_softmax(kv.last_logits[kv.row_prompt].float(), dim=-1)  # (B, V)
            return lp[:, [ids[0] for ids in c_ids]]
        last = run_after(model, kv, list(prefix), [torch.tensor([p - 1])] * b)  # B x (1, V)
        lp = torch.log_softmax(torch.cat(last).float(), dim=-1)  # (B, V)
        return lp[:, [ids[0] for ids in c_ids]]
    kv = prefill(model, embed, [ids for ids in p_ids for _ in c_ids], llm.pad_id, store,  # B * C rows, B prefills
                 llm.rows_share_prompts)
    pieces, keep = zip(*(_teacher_forced(llm, prefix[i], t) for i in range(b) for t in c_ids))
    return _choice_scores(run_after(model, kv, pieces, keep), c_ids).view(b, c)


@torch.no_grad()
def after_prompt_sequences(llm: nn.Module, prefix: torch.Tensor, p_ids: list[list[int]], owner: Sequence[int],
                           sampler: object, max_new_tokens: int, stop: object) -> torch.Tensor:
    """`FrozenLLM.generate` / `sample` with the soft prompt after the prompt: (S, T) token ids of the S sequences
    (`owner[s]` = the row of sequence s) generated after [prompt; soft prompt]. Each distinct prompt is prefilled
    once (kept for later calls under `shared_prefill`), each row reads its soft prompt after its prompt's cache,
    and a row's cache is copied to its sequences (`sampling.continue_sequences`; greedy where `sampler` is None).
    So one item asked for many users, a row's MBR samples and the methods of one evaluation read one prefill."""
    model = llm.model
    kv = prefill(model, model.get_input_embeddings(), p_ids, llm.pad_id, llm.prefill_store, llm.rows_share_prompts)
    rows, (b, p) = kv.row_prompt, prefix.shape[:2]
    lengths = kv.mask.sum(-1)[rows]  # (B,) each row's prompt length
    mask = torch.cat([kv.mask[rows], kv.mask.new_ones(b, p)], dim=1)  # (B, L + P)
    cache = kv.cache(rows)  # each row's copy: the rows' continuations differ from here on
    logits = kv.last_logits[rows]  # (B, V): a row without a soft prompt continues from its prompt
    if p:
        one_logit = {"logits_to_keep": 1} if _keeps_logits(model) else {}
        out = model(inputs_embeds=prefix.to(kv.layers[0][0].dtype), attention_mask=mask, use_cache=True,
                    position_ids=lengths[:, None] + torch.arange(p, device=mask.device),
                    **{cache_argument(model): cache}, **one_logit)
        logits = out.logits[:, -1]
    return continue_sequences(model, cache, logits, mask, lengths + p, torch.tensor(list(owner), device=mask.device),
                              sampler, max_new_tokens, stop, llm.pad_id, llm.eos_id)


@torch.no_grad()
def prefix_choices(llm: nn.Module, prefix: torch.Tensor, p_ids: list[list[int]], c_ids: list[list[int]]
                   ) -> torch.Tensor:
    """`FrozenLLM.choice_logprobs` of a multi-token choice set with the soft prompt in front: (B, C) log p(choice |
    soft prompt, prompt). Each row's [soft prompt; prompt] is prefilled once and its C choices continue from that
    cache, instead of C full forwards over the prompt (15 news categories: 15 x the prompt). The continuation of a
    choice starts with the prompt's last token, so its first position predicts the choice's first token."""
    b, c = len(p_ids), len(c_ids)
    heads = [torch.cat([prefix[i], llm.embed(torch.tensor(p[:-1], dtype=torch.long))]) for i, p in enumerate(p_ids)]
    kv = prefill_embeds(llm.model, heads, [i for i in range(b) for _ in c_ids])
    pieces = [llm.embed(torch.tensor([p_ids[i][-1], *t[:-1]], dtype=torch.long)) for i in range(b) for t in c_ids]
    logits = run_after(llm.model, kv, pieces, [torch.arange(len(t)) for _ in range(b) for t in c_ids])
    return _choice_scores(logits, c_ids).view(b, c)


def _choice_scores(logits: Sequence[torch.Tensor], c_ids: list[list[int]]) -> torch.Tensor:
    """(B * C,) log p(choice) summed over its tokens, from each (row, choice) pair's (len(choice), V) logits, the
    pairs row-major (row r's choice is `c_ids[r % C]`)."""
    c = len(c_ids)
    return torch.stack([torch.log_softmax(lg.float(), dim=-1).gather(
        -1, torch.tensor(c_ids[r % c], device=lg.device)[:, None]).sum() for r, lg in enumerate(logits)])


def _keeps_logits(model: nn.Module) -> bool:
    return "logits_to_keep" in forward_arguments(type(model))


def _layers(cache: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers cache (the `layers` of recent versions, or tuples)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]


__all__ = ["SOFT_PROMPT_POSITIONS", "PrefillStore", "PromptKV", "after_prompt_choices", "after_prompt_loss",
           "after_prompt_sequences",
           "check_position", "distinct_prompts", "prefill", "prefill_embeds", "prefix_choices",
           "run_after", "shared_prefill"]
