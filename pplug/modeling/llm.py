"""FrozenLLM: a frozen HF causal or seq2seq LM that takes a per-row soft prompt in front of its input.

peft's prompt-tuning rules in one place, except that the prefix is computed per row (per user), never `repeat`ed.

- causal:  inputs_embeds = [prefix; Emb(prompt); Emb(target)]; labels -100 on prefix and prompt (loss on target
           + EOS only). Training/scoring batches are right-padded, generation batches left-padded ([pad; prefix;
           prompt]) so every row's last real token sits at the end.
- seq2seq: the prefix goes in front of the encoder's inputs_embeds only; labels / decoder untouched.
- the prefix is cast to the embedding dtype (bf16 LLMs take a float32 embedder).

Prompts longer than `max_input_tokens` lose their middle: LaMP prompts start with the instruction (or the
retrieved items) and the content follows, so the head is the most valuable part; the last quarter of the
budget keeps the prompt's end (where templates put the answer cue such as "review: ...\nScore:").
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pplug.core.runtime import DTYPES, resolve_device, resolve_dtype

from .prefill import after_prompt_choices, after_prompt_loss, after_prompt_sequences, check_position, prefix_choices
from .sampling import FirstLineStop, RowSampler, left_padded_inputs, row_sampler, row_seed, sample_ids
from .seq2seq import seq2seq_choice_logprobs


def _first_label(labels: torch.Tensor) -> int:
    """The earliest position, over all rows, whose label is scored (labels (B, L), -100 = not scored)."""
    scored = (labels != -100).any(dim=0)  # (L,)
    return int(scored.nonzero()[0]) if bool(scored.any()) else 0


def truncate_middle(ids: list[int], max_len: int) -> list[int]:
    """Keep the first 3/4 and the last 1/4 of a `max_len` budget, dropping the middle."""
    if len(ids) <= max_len:
        return ids
    tail = max_len // 4
    head = max_len - tail
    return ids[:head] + (ids[-tail:] if tail else [])


def token_embedding_norm(embedding: nn.Embedding | torch.Tensor) -> float:
    """Mean L2 norm of a token embedding matrix (the scale soft prompts are initialised to)."""
    w = embedding.weight if isinstance(embedding, nn.Module) else embedding
    norm = w.detach().float().norm(dim=-1).mean().item()
    return norm if math.isfinite(norm) and norm > 0 else 1.0


class FrozenLLM(nn.Module):
    """A frozen LLM (causal or seq2seq) driven through `inputs_embeds` with a per-row soft prompt.

    Args:
        name_or_path: "default" (SmolLM2-135M-Instruct), an HF id or a local folder.
        dtype: "auto" (decided for the device by `pplug.core.runtime.resolve_dtype`), "float32", "bfloat16" or "float16".
        device: "auto" (cuda, then mps, then cpu), or a device name.
        max_input_tokens: prompt tokens kept per row (middle cut, see module docstring).
        max_target_tokens: target tokens kept per row for the loss.
        model / tokenizer: an already loaded model and tokenizer (skips loading).

    Attributes:
        tokenizer, model, is_seq2seq, token_dim (embedding size), token_norm (mean token-embedding L2 norm),
        name_or_path (as given).
    """

    def __init__(
        self,
        name_or_path: str = "default",
        dtype: str = "auto",
        max_input_tokens: int = 256,
        max_target_tokens: int = 64,
        model: nn.Module | None = None,
        tokenizer=None,
        device: str | torch.device = "auto",
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from pplug.core.weights import resolve_llm

        self.name_or_path = name_or_path
        dev = resolve_device(device)
        if model is None:
            dtype = resolve_dtype(dtype, dev)
            path = resolve_llm(name_or_path)
            hf_config = AutoConfig.from_pretrained(path)
            cls = AutoModelForSeq2SeqLM if hf_config.is_encoder_decoder else AutoModelForCausalLM
            model = cls.from_pretrained(path, dtype=DTYPES[dtype])
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        elif tokenizer is None:
            raise ValueError("FrozenLLM: pass the tokenizer together with the model")
        elif dtype != "auto":  # a given model keeps its dtype unless one is asked for
            model = model.to(DTYPES[resolve_dtype(dtype, dev)])
        model = model.to(dev)
        self.model = model
        self.tokenizer = tokenizer
        self.plugins: dict[str, Any] = {}
        """Method plug-ins loaded onto this LLM, by name (`pplug.methods.registry.method_rows` runs rows through them)."""
        self.prefill_store = None  # while set (`prefill.shared_prefill`), scoring keeps prompts' prefills for reuse
        self.rows_share_prompts = True  # False while rows run through their own adapters (`LoRAHub.rows`)
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self.max_input_tokens = max_input_tokens
        self.max_target_tokens = max_target_tokens
        if tokenizer.pad_token_id is None:  # many causal LMs ship without a pad token; pads are masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = int(tokenizer.eos_token_id) if tokenizer.eos_token_id is not None else self.pad_id
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        emb = self.model.get_input_embeddings()
        self.token_dim = int(emb.embedding_dim)
        self.token_norm = token_embedding_norm(emb)
        self.vocab_size = int(emb.num_embeddings)
        # HF causal LMs take `logits_to_keep` (`num_logits_to_keep` before transformers 4.50): the vocabulary
        # projection then runs only over the last positions, the only ones a loss or a score reads.
        params = inspect.signature(self.model.forward).parameters
        self._keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep") if a in params), None)

    # --- always frozen, always in eval mode (no dropout in the LLM, even while the embedder trains) ---

    def train(self, mode: bool = True) -> FrozenLLM:
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def set_dtype(self, dtype: str, device: str | torch.device | None = None) -> None:
        """Cast the frozen weights to `dtype` ("auto" decides for `device`, default the current one)."""
        self.model.to(DTYPES[resolve_dtype(dtype, device or self.device)])

    def identity(self) -> dict:
        """What a checkpoint records about its base model (compared on load)."""
        return {
            "model_type": str(self.model.config.model_type),
            "token_dim": self.token_dim,
            "vocab_size": self.vocab_size,
            "is_seq2seq": self.is_seq2seq,
            "embedding_fingerprint": self.embedding_fingerprint(),
        }

    def embedding_fingerprint(self) -> str:
        """Hash of the first token embeddings rounded to bfloat16, so the same weights loaded in float32 or
        bfloat16 (or from another folder) agree while a different model with the same shapes does not."""
        import hashlib

        w = self.model.get_input_embeddings().weight[:64].detach().to("cpu", torch.bfloat16)
        return hashlib.sha256(w.view(torch.int16).numpy().tobytes()).hexdigest()[:16]

    # --- tokenisation ---

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        # no special tokens: prompt and target are glued as ids; EOS is added explicitly where it belongs
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, token_dim) float32 on the CPU: the mean input embedding of each text's tokens (a label's own token
        for single-token labels), the LLM-native start of the embedder's label table."""
        rows = []
        for ids in self._tokenize(texts):
            if not ids:
                raise ValueError(f"text_embeddings: a text of {list(texts)!r} has no tokens")
            rows.append(self.embed(torch.tensor(ids)).float().mean(dim=0).cpu())
        return torch.stack(rows)

    def single_token(self, choices: Sequence[str]) -> bool:
        """True when every choice is one token (then `forward(choices=...)` scores them in the loss's pass)."""
        return all(len(ids) == 1 for ids in self._tokenize(choices))

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, middle-truncated to `max_input_tokens`. A seq2seq encoder's input ends with
        EOS (as T5 was trained); an empty causal prompt gets the BOS token (or EOS) so there is always a position
        to predict from."""
        out = []
        for ids in self._tokenize(prompts):
            if self.is_seq2seq:
                ids = truncate_middle(ids, self.max_input_tokens - 1) + [self.eos_id]
            else:
                ids = truncate_middle(ids, self.max_input_tokens)
                if not ids:
                    bos = self.tokenizer.bos_token_id
                    ids = [int(bos) if bos is not None else self.eos_id]
            out.append(ids)
        return out

    def prompt_budget(self):
        """The `PromptBudget` that fits retrieved history items into this LLM's prompt limit."""
        from pplug.methods.prompts import PromptBudget

        return PromptBudget(self.tokenizer, self.max_input_tokens - int(self.is_seq2seq))

    def target_ids(self, targets: Sequence[str]) -> list[list[int]]:
        """Target token ids (truncated to `max_target_tokens - 1`) followed by EOS, so the model learns to stop."""
        return [ids[: self.max_target_tokens - 1] + [self.eos_id] for ids in self._tokenize(targets)]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # (..., ) token ids -> (..., D)
        return self.model.get_input_embeddings()(ids.to(self.device))

    # --- building [prefix; Emb(x)] batches ---

    def _check_prefix(self, prefix: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        if prefix is None:
            return torch.zeros(batch_size, 0, self.token_dim, device=self.device, dtype=self.dtype)
        if prefix.dim() != 3 or prefix.shape[0] != batch_size or prefix.shape[2] != self.token_dim:
            raise ValueError(
                f"prefix must be (batch_size={batch_size}, P, token_dim={self.token_dim}), got {tuple(prefix.shape)}"
            )
        return prefix.to(device=self.device, dtype=self.dtype)  # peft: cast the prompt to the embedding dtype

    def _right_padded(self, prefix: torch.Tensor, rows: list[list[int]], labels_from: list[int] | None = None):
        """[prefix; Emb(ids); pad] for each row. Returns inputs_embeds (B, P+L, D), attention_mask (B, P+L),
        position_ids (B, P+L), and labels (B, P+L) with -100 everywhere except ids[labels_from[r]:]."""
        b, p = prefix.shape[0], prefix.shape[1]
        length = max(len(r) for r in rows)
        ids = torch.full((b, length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(b, p + length, dtype=torch.long)
        labels = torch.full((b, p + length), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : p + len(r)] = 1
            if labels_from is not None:
                labels[i, p + labels_from[i] : p + len(r)] = torch.tensor(r[labels_from[i] :], dtype=torch.long)
        embeds = torch.cat([prefix, self.embed(ids)], dim=1)  # (B, P+L, D)
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        return embeds, mask.to(self.device), position_ids.to(self.device), labels.to(self.device)

    def build_inputs(self, prefix: torch.Tensor | None, prompts: Sequence[str],
                     targets: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for a training/scoring batch. Causal: {"inputs_embeds" (B, P+L, D), "attention_mask"
        (B, P+L), "position_ids", "labels" (B, P+L)} with labels -100 on prefix, prompt and padding. Seq2seq:
        encoder {"inputs_embeds", "attention_mask"} with the prefix in front, plus "labels" (B, T) = target ids +
        EOS, -100 on padding (no prefix in the labels)."""
        b = len(prompts)
        prefix = self._check_prefix(prefix, b)
        p_ids = self.prompt_ids(prompts)
        t_ids = self.target_ids(targets) if targets is not None else None
        if self.is_seq2seq:
            embeds, mask, _, _ = self._right_padded(prefix, p_ids)
            out = {"inputs_embeds": embeds, "attention_mask": mask}
            if t_ids is not None:
                t_len = max(len(t) for t in t_ids)
                labels = torch.full((b, t_len), -100, dtype=torch.long)
                for i, t in enumerate(t_ids):
                    labels[i, : len(t)] = torch.tensor(t, dtype=torch.long)
                out["labels"] = labels.to(self.device)
            return out
        if t_ids is None:
            embeds, mask, pos, _ = self._right_padded(prefix, p_ids)
            return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos}
        rows = [p + t for p, t in zip(p_ids, t_ids)]
        embeds, mask, pos, labels = self._right_padded(prefix, rows, labels_from=[len(p) for p in p_ids])
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos, "labels": labels}

    def prompt_embeds(self, prefix: torch.Tensor | None, prompts: Sequence[str],
                      position: str = "prefix") -> list[torch.Tensor]:
        """Each row's [prefix; Emb(prompt)] (`position` "after_prompt": [Emb(prompt); prefix]) as its own
        (P + L_i, D) tensor, no padding: the rows `build_inputs` builds (same prefix cast, truncation, BOS
        rule), for engines taking one embedding per prompt (vLLM)."""
        prefix, after = self._check_prefix(prefix, len(prompts)), self._after(position)
        return [torch.cat([self.embed(torch.tensor(ids)), prefix[i]] if after else
                          [prefix[i], self.embed(torch.tensor(ids))]) for i, ids in enumerate(self.prompt_ids(prompts))]

    def _after(self, position: str) -> bool:
        """Whether the soft prompt goes after the prompt (`pplug.modeling.prefill`; causal LLMs only)."""
        return check_position(position, self.is_seq2seq) == "after_prompt"

    # --- loss, scoring, generation ---

    def _causal_logits(self, inputs: dict[str, torch.Tensor], first: int) -> tuple[torch.Tensor, int]:
        """Logits of a causal LM from position `first` on: ((B, L - start, V), start), start <= first.

        Why: on a right-padded batch every position a loss or a score reads lies at or after the earliest
        row's first such position, and the vocabulary projection over the prompt positions before it is about
        a fifth of a small LLM's training step (SmolLM2-135M: 28M of its 135M parameters, 49k-token vocab).
        A model without `logits_to_keep` computes every position (start = 0); the results are the same.
        """
        length = inputs["inputs_embeds"].shape[1]
        keep = {self._keep_arg: length - first} if self._keep_arg and 0 < first < length else {}
        logits = self.model(**inputs, **keep, use_cache=False).logits  # (B, K, V): the last K positions
        return logits, length - logits.shape[1]

    def forward(self, prefix: torch.Tensor | None, prompts: Sequence[str], targets: Sequence[str],
                choices: Sequence[str] | None = None,
                position: str = "prefix") -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Mean token cross-entropy of the targets given [prefix; prompt] (scalar; gradients flow to prefix).

        With `choices` (single-token answers such as "1".."5") also returns, from the same forward pass, the
        (B, C) log-probabilities of each choice at the position that predicts the target's first token (a
        softmax over the whole vocabulary, as `choice_logprobs` scores them), for a loss on the decoded answer.
        `position` "after_prompt": given [prompt; prefix], each distinct prompt's prefill computed once without
        gradient (`pplug.modeling.prefill.after_prompt_loss`).
        """
        choice_ids = None
        if choices is not None:
            ids = self._tokenize(choices)
            if any(len(t) != 1 for t in ids):
                raise ValueError(f"forward(choices=...) needs single-token choices, got {list(choices)!r}")
            choice_ids = [t[0] for t in ids]
        if self._after(position) and prefix is not None and prefix.shape[1]:
            return after_prompt_loss(self, self._check_prefix(prefix, len(prompts)), self.prompt_ids(prompts),
                                     self.target_ids(targets), choice_ids)
        inputs = self.build_inputs(prefix, prompts, targets)
        labels = inputs.pop("labels")
        if self.is_seq2seq:  # teacher forcing: decoder input = labels shifted right (starting with the start token)
            inputs["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
            logits = self.model(**inputs, use_cache=False).logits.float()
        else:  # next-token prediction: position t predicts token t+1, so logits from the one before the first label
            logits, start = self._causal_logits(inputs, _first_label(labels) - 1)
            logits, labels = logits[:, :-1].float(), labels[:, start + 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        if choice_ids is None:
            return loss
        first = (labels != -100).int().argmax(dim=-1)  # (B,) each row's first target position
        answer = logits[torch.arange(len(prompts), device=logits.device), first]  # (B, V)
        return loss, torch.log_softmax(answer, dim=-1)[:, choice_ids]  # (B, C)

    @torch.no_grad()
    def choice_logprobs(self, prefix: torch.Tensor | None, prompts: Sequence[str],
                        choices: Sequence[str], position: str = "prefix") -> torch.Tensor:
        """log p(choice | prefix, prompt) summed over the choice's tokens (no EOS), for every row and choice.

        Single-token choice sets ("1".."5") take one forward over the B rows; multi-token sets prefill each row's
        [prefix; prompt] once and continue its C choices from it (`prefill.prefix_choices`). Choices are tokenised
        alone, as targets are in training. "after_prompt": [prompt; prefix], one prefill per distinct prompt
        (`prefill.after_prompt_choices`), kept for later passes under `prefill.shared_prefill`.

        Returns:
            (B, C) float32 log-probabilities.
        """
        b, c = len(prompts), len(choices)
        if c == 0:
            raise ValueError("choice_logprobs needs at least one choice")
        prefix = self._check_prefix(prefix, b)
        c_ids = self._tokenize(choices)
        if any(len(ids) == 0 for ids in c_ids):
            raise ValueError(f"choice_logprobs: a choice tokenises to nothing: {list(choices)!r}")
        alone_shared = self.prefill_store is not None and not self.is_seq2seq and not prefix.shape[1] and all(
            len(i) == 1 for i in c_ids)  # the frozen LLM alone: a shared prefill's last logits, kept for the others
        if (self._after(position) and prefix.shape[1]) or alone_shared:
            return after_prompt_choices(self, prefix, self.prompt_ids(prompts), c_ids)
        if self.is_seq2seq:
            return seq2seq_choice_logprobs(self, self.build_inputs(prefix, prompts), c_ids)
        p_ids = self.prompt_ids(prompts)
        if all(len(ids) == 1 for ids in c_ids):
            embeds, mask, pos, _ = self._right_padded(prefix, p_ids)
            last = mask.sum(-1) - 1  # (B,) index of each row's last real position
            logits, start = self._causal_logits({"inputs_embeds": embeds, "attention_mask": mask,
                                                 "position_ids": pos}, int(last.min()))
            lp = torch.log_softmax(logits[torch.arange(b, device=self.device), last - start].float(), dim=-1)  # (B, V)
            return lp[:, [ids[0] for ids in c_ids]]
        if prefix.shape[1] + min(len(p) for p in p_ids) > 1:  # every row has a head to prefill
            return prefix_choices(self, prefix, p_ids, c_ids)
        rows = [p + t for p in p_ids for t in c_ids]
        rep_prefix = prefix.repeat_interleave(c, dim=0)
        embeds, mask, pos, labels = self._right_padded(rep_prefix, rows,
                                                       labels_from=[len(p) for p in p_ids for _ in c_ids])
        logits, start = self._causal_logits({"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos},
                                            _first_label(labels) - 1)
        lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        labels = labels[:, start + 1:]
        tok = lp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (labels != -100)
        return tok.sum(-1).view(b, c)

    def _generation_inputs(self, prefix: torch.Tensor, p_ids: list[list[int]],
                           position: str = "prefix") -> dict[str, torch.Tensor]:
        """`inputs_embeds` + `attention_mask` for HF generate: right-padded for seq2seq encoders, left-padded
        for causal LMs (`sampling.left_padded_inputs`)."""
        if self.is_seq2seq:
            embeds, mask, _, _ = self._right_padded(prefix, p_ids)
            return {"inputs_embeds": embeds, "attention_mask": mask}
        return left_padded_inputs(self.embed, prefix, p_ids, self.pad_id, self._after(position))

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor | None, prompts: Sequence[str], max_new_tokens: int = 32,
                 num_beams: int = 1, position: str = "prefix", first_line: bool = False, **kwargs) -> list[str]:
        """Deterministic generation (greedy, or beam search with `num_beams` > 1) from [prefix; prompt].

        Causal batches are left-padded: [pad; prefix; prompt] so every row continues from its own last token;
        greedy after the prompt, each distinct prompt is prefilled once (`prefill.after_prompt_sequences`).
        `first_line`: a row stops once its first non-empty line is complete (`FirstLineStop`); with beams,
        each beam ends with its first line, so the beams are ranked as lines.
        Returns the decoded continuations (special tokens dropped, whitespace stripped).
        """
        prefix, p_ids = self._check_prefix(prefix, len(prompts)), self.prompt_ids(prompts)
        stop = self.first_line_stop(per_candidate=num_beams > 1) if first_line else None
        if num_beams == 1 and not kwargs and self._shares_prompts(prefix, position):
            out = after_prompt_sequences(self, prefix, p_ids, range(len(p_ids)), None, max_new_tokens, stop)
        else:
            from transformers import StoppingCriteriaList

            gen_kwargs = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                              pad_token_id=self.pad_id, eos_token_id=self.eos_id)
            gen_kwargs.update({"stopping_criteria": StoppingCriteriaList([stop])} if stop else {}, **kwargs)
            out = self.model.generate(**self._generation_inputs(prefix, p_ids, position), **gen_kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def _shares_prompts(self, prefix: torch.Tensor, position: str) -> bool:
        """Decoding reads the prompts' shared prefill: after the prompt, or without a soft prompt under a store."""
        return self._after(position) or (self.prefill_store is not None and not self.is_seq2seq and not prefix.shape[1])

    @torch.no_grad()
    def sample(self, prefix: torch.Tensor | None, prompts: Sequence[str], num_samples: int | Sequence[int] = 8,
               temperature: float | Sequence[float] = 1.0, top_p: float | Sequence[float] = 1.0,
               max_new_tokens: int = 32, seed: int | Sequence[int] = 0, first_line: bool = False,
               position: str = "prefix") -> list[list[str]]:
        """`num_samples` sampled continuations per row (temperature / nucleus sampling), in one batched pass.

        Every setting may be one value or one per row (`row_sampler`: a row's samples depend on its own seed
        only, not on the other rows, the batch size or the global RNG); how the sequences are drawn:
        `sample_ids`. `first_line`: a sequence stops once its first non-empty line is complete (what
        `clean_generation` keeps), see `FirstLineStop`.

        Returns:
            B lists of decoded continuations (special tokens dropped, whitespace stripped), `num_samples[i]` each.
        """
        owner, sampler = row_sampler(len(prompts), num_samples, temperature, top_p, seed)
        prefix = self._check_prefix(prefix, len(prompts))
        if not owner:
            return [[] for _ in prompts]
        p_ids, stop = self.prompt_ids(prompts), self.first_line_stop() if first_line else None
        if self._shares_prompts(prefix, position):  # each distinct prompt prefilled once
            out = after_prompt_sequences(self, prefix, p_ids, owner, sampler, max_new_tokens, stop)  # (S, T)
        else:
            out = sample_ids(self.model, self._generation_inputs(prefix, p_ids, position), owner, sampler,
                             max_new_tokens, stop, self.pad_id, self.eos_id, self.is_seq2seq, self._keep_arg)
        result: list[list[str]] = [[] for _ in prompts]
        for i, text in zip(owner, self.tokenizer.batch_decode(out, skip_special_tokens=True)):
            result[i].append(text.strip())
        return result

    def first_line_stop(self, per_candidate: bool = False) -> FirstLineStop:
        """A fresh `FirstLineStop` (`per_candidate` for beam search); the token tables are built once per LLM."""
        if getattr(self, "_line_tables", None) is None:
            self._line_tables = FirstLineStop.token_tables(self.tokenizer)
        return FirstLineStop(*self._line_tables, per_candidate=per_candidate)


__all__ = ["FirstLineStop", "FrozenLLM", "RowSampler", "row_seed", "token_embedding_norm", "truncate_middle"]
