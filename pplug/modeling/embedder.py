"""UserEmbedder: a user's whole history + the current input -> soft-prompt vectors for a frozen LLM.

PPlug (Liu et al. 2024):

    h_1..h_N  frozen sentence embeddings of the user's history items (cached, see history.py)
    e_x       embedding of the current input by a *trainable* copy of the sentence encoder
    w_i     = softmax_i(h_i . e_x / tau)            (padding masked; "mean" ablation: w_i = 1/N;
                                                     "mixed": g * softmax + (1 - g) / N, g = sigmoid(learned))
    P_u     = sum_i w_i * Proj(h_i),  Proj = Linear(d_enc -> d_llm) -> GELU -> Linear(d_llm -> T * d_llm)
    S_u     = MLP(s_u)                              (optional, `user_stats`: s_u = TaskSpec.history_stats, the
                                                     user's rating/label shares, output lengths, history size;
                                                     `stats_init="labels"`: + sum_c share_c * E_c, E_c the LLM's
                                                     token embedding of label c)
    A_u     = sum_i w_i * E_{y_i}                   (optional, `label_token`: the labels of the past items,
                                                     weighted by the same attention, over labelled items)
    X       = MLP(e_x)                              (optional, `input_token`: the encoder's reading of the input)
    I       = MLP(v)                                (one learned instruction vector per task)
    prefix  = [I ; P_u ; S_u ; A_u ; X]             (B, 1 + T [+ 1] [+ 1] [+ 1], d_llm), prepended to Emb(x)

`num_user_tokens` T > 1 widens Proj's last layer to T * d_llm and reshapes: each user token is its own
slice of the same attention-pooled projection (cheap, one attention per row). A user with no history
(cold start) gets a learned default user vector instead of an undefined softmax over nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pplug.core.tasks import get_task

from .config import PPlugConfig


def similarity_weights(history_emb: torch.Tensor, history_mask: torch.Tensor, query_emb: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """softmax_i(h_i . q / temperature) over each row's valid items: (B, N, d) + (B, N) + (B, d) -> (B, N), on
    `history_emb`'s device; all-masked rows 0. The input-aware attention, and `history_mix_prior: encoder`."""
    mask = history_mask.to(device=history_emb.device, dtype=torch.bool)
    scores = torch.einsum("bnd,bd->bn", history_emb.float(), query_emb.to(history_emb.device).float()) / temperature
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # finite: no NaN on all-masked rows
    return torch.softmax(scores, dim=-1) * mask  # all-masked rows -> exactly 0


def label_shares(weights: torch.Tensor, history_labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(B, N) weights over the items + (B, N) label index per item (-1: none) -> (B, C) the weighted share of
    each label, the weights renormalised over the items that hold a label; a row with none gets zeros. What the
    label token reads and what `history_mix_prior` "encoder" / "attention" mixes in."""
    labels = history_labels.to(weights.device).long()
    if labels.shape != weights.shape:
        raise ValueError(f"history_labels must be {tuple(weights.shape)} like the history, got {tuple(labels.shape)}")
    has_label = labels >= 0  # (B, N)
    w = weights * has_label
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (B, N); all-zero rows stay 0
    onehot = F.one_hot(labels.clamp_min(0), num_labels).float() * has_label[..., None]  # (B, N, C)
    return torch.einsum("bn,bnc->bc", w, onehot)  # (B, C)


def history_label_tensor(history_labels: Sequence[Sequence[int]], max_history: int, n: int) -> torch.Tensor:
    """(B, n) long: each row's `max_history` most recent label indices, left-aligned like `history_tensors`'s
    items, -1 where a row is shorter."""
    out = torch.full((len(history_labels), n), -1, dtype=torch.long)
    for i, row in enumerate(history_labels):
        kept = list(row)[-max_history:] if row else []
        if kept:
            out[i, : len(kept)] = torch.tensor(kept, dtype=torch.long)
    return out


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


@torch.no_grad()
def _calibrate_output_norm(mlp: nn.Sequential, d_in: int, out_chunks: int, target_norm: float, seed: int) -> None:
    """Rescale the last layer of `mlp` so unit-norm inputs give outputs with the target L2 norm per token.

    Why: a freshly initialised MLP emits vectors whose norm has nothing to do with the LLM's token
    embeddings (default init gives norms of ~0.5 while SmolLM2's tokens have norm ~3-4 and T5's ~hundreds). A
    soft prompt far off the token-embedding scale is either ignored by the attention or swamps it, and
    training must first spend many steps fixing the scale. Matching the mean token norm at init starts the
    prefix "looking like a token".
    """
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(256, d_in, generator=g), dim=-1)
    y = mlp(x).reshape(256 * out_chunks, -1)
    measured = y.norm(dim=-1).mean().item()
    if measured > 0:
        last = mlp[-1]
        last.weight.mul_(target_norm / measured)
        last.bias.mul_(target_norm / measured)


class UserEmbedder(nn.Module):
    """Trainable part of PPlug: input encoder, input-aware attention, projector, instruction embedding.

    Args:
        config: model configuration (num_user_tokens, input_encoder, aggregation, temperature, ...).
        encoder_dim: size of the history embeddings (d_enc).
        token_dim: the LLM's token embedding size (d_llm).
        token_norm: mean L2 norm of the LLM's token embeddings; the prefix vectors are initialised to it.
        sentence_encoder: the frozen sentence-transformers model of the HistoryEncoder; with
            `input_encoder="trainable"` a deep copy of it becomes the trainable input encoder.
        label_embeddings: (num_labels, token_dim) the LLM's token embedding of each task label
            (`FrozenLLM.text_embeddings`), the start of the trainable label table that `label_token` and
            `stats_init="labels"` read (`config.reads_label_embeddings`); random token-sized vectors if None.

    Input shapes: history_emb (batch_size, num_items, encoder_dim), history_mask (batch_size, num_items),
    queries: list of batch_size strings (trainable input encoder) or (batch_size, encoder_dim) frozen embeddings.
    Output shape: (batch_size, num_prefix_tokens, token_dim), num_prefix_tokens = use_instruction +
    (T + user_stats + label_token + input_token) * use_user_embedding; history_labels (batch_size, num_items)
    long, the label index of each item, -1 for none (`label_token`).
    """

    def __init__(
        self,
        config: PPlugConfig,
        encoder_dim: int,
        token_dim: int,
        token_norm: float = 1.0,
        sentence_encoder: nn.Module | None = None,
        label_embeddings: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        self.encoder_dim = encoder_dim
        self.token_dim = token_dim
        self.num_user_tokens = config.num_user_tokens
        seed = 0
        g = torch.Generator().manual_seed(seed)

        self.input_encoder: nn.Module | None = None
        self.query_proj: nn.Linear | None = None
        if config.use_user_embedding:
            if self.needs_query:  # the one rule for "reads the input": attention, or the input token
                if config.input_encoder == "trainable":
                    if sentence_encoder is None:
                        raise ValueError("input_encoder='trainable' needs the sentence encoder to copy")
                    self.input_encoder = copy.deepcopy(sentence_encoder)
                    self.input_encoder.max_seq_length = config.max_encoder_tokens
                    for p in self.input_encoder.parameters():
                        p.requires_grad_(True)
                else:
                    # identity init: training starts from PPlug's plain h . e_x similarity
                    self.query_proj = nn.Linear(encoder_dim, encoder_dim)
                    with torch.no_grad():
                        self.query_proj.weight.copy_(torch.eye(encoder_dim))
                        self.query_proj.bias.zero_()
            self.projector = _mlp(encoder_dim, token_dim, token_dim * self.num_user_tokens)
            _calibrate_output_norm(self.projector, encoder_dim, self.num_user_tokens, token_norm, seed)
            # cold start: a learned user vector for rows with no history (scaled like a token)
            default = torch.randn(self.num_user_tokens, token_dim, generator=g)
            self.default_user = nn.Parameter(F.normalize(default, dim=-1) * token_norm)
            if config.aggregation == "mixed":
                self.mix_logit = nn.Parameter(torch.zeros(()))  # sigmoid(0) = 0.5: half attention, half mean
            if config.reads_label_embeddings:
                num_labels = len(get_task(config.task).labels)
                if label_embeddings is None:
                    label_embeddings = F.normalize(torch.randn(num_labels, token_dim, generator=g), dim=-1) * token_norm
                if tuple(label_embeddings.shape) != (num_labels, token_dim):
                    raise ValueError(f"label_embeddings must be ({num_labels}, {token_dim}) for {config.task}, "
                                     f"got {tuple(label_embeddings.shape)}")
                self.label_table = nn.Parameter(label_embeddings.detach().float().clone())  # (C, D)
            if config.user_stats:
                self.stats_dim = get_task(config.task).stats_dim
                self.stats_mlp = _mlp(self.stats_dim, token_dim, token_dim)
                if self.config.stats_reads_labels:  # S_u starts as the user's soft label; the MLP learns the rest
                    nn.init.zeros_(self.stats_mlp[-1].weight)
                    nn.init.zeros_(self.stats_mlp[-1].bias)
                else:
                    _calibrate_output_norm(self.stats_mlp, self.stats_dim, 1, token_norm, seed + 2)
            if config.input_token:
                self.input_mlp = _mlp(encoder_dim, token_dim, token_dim)
                _calibrate_output_norm(self.input_mlp, encoder_dim, 1, token_norm, seed + 3)
        if config.use_instruction:
            # PPlug's instruction embedding: a learned vector through its own MLP, shared by all users of a task
            self.instruction_vector = nn.Parameter(F.normalize(torch.randn(1, encoder_dim, generator=g), dim=-1))
            self.instruction_mlp = _mlp(encoder_dim, token_dim, token_dim)
            _calibrate_output_norm(self.instruction_mlp, encoder_dim, 1, token_norm, seed + 1)

    @property
    def num_prefix_tokens(self) -> int:
        """Soft-prompt length P = [instruction] + [T user tokens] + [statistics] + [label token] + [input token]."""
        extra = int(self.config.user_stats) + int(self.config.label_token) + int(self.config.input_token)
        user = (self.num_user_tokens + extra) * int(self.config.use_user_embedding)
        return int(self.config.use_instruction) + user

    @property
    def needs_query_text(self) -> bool:
        """True when the input must be given as text (trainable input encoder), else as frozen embeddings."""
        return self.input_encoder is not None

    @property
    def needs_query(self) -> bool:
        """False for the mean-aggregation ablation (without `input_token`) and the prompt-tuned control."""
        attends = self.config.aggregation in ("input_aware", "mixed")
        return self.config.use_user_embedding and (attends or self.config.input_token)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def embed_query(self, queries: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Input embedding e_x, L2-normalised.

        Args:
            queries: list of B texts (trainable encoder; gradients flow into it) or (B, encoder_dim) frozen
                embeddings (frozen mode; passed through the trainable query projection).

        Returns:
            (B, encoder_dim) float32.
        """
        device = self._device()
        if self.input_encoder is not None:
            if isinstance(queries, torch.Tensor):
                raise TypeError("the trainable input encoder needs query texts, got a tensor")
            # sentence-transformers >= 5 renamed tokenize -> preprocess
            prep = getattr(self.input_encoder, "preprocess", None) or self.input_encoder.tokenize
            texts = list(queries)
            distinct = {t: i for i, t in enumerate(dict.fromkeys(texts))}  # history-drop copies share an input
            features = prep(list(distinct))
            features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            emb = self.input_encoder(features)["sentence_embedding"]  # (U, d_enc), mean pooled
            if len(distinct) < len(texts):  # each distinct input encoded once, its rows read it
                emb = emb[torch.tensor([distinct[t] for t in texts], device=emb.device)]  # (B, d_enc)
            return F.normalize(emb.float(), dim=-1)
        if self.query_proj is None:
            raise RuntimeError("this embedder does not use the input (aggregation='mean' without input_token, "
                               "or no user embedding)")
        if not isinstance(queries, torch.Tensor):
            raise TypeError("input_encoder='frozen' needs frozen query embeddings (B, encoder_dim), got texts")
        return F.normalize(self.query_proj(queries.to(device).float()), dim=-1)

    def attention_weights(self, history_emb: torch.Tensor, history_mask: torch.Tensor,
                          query_emb: torch.Tensor | None) -> torch.Tensor:
        """Weights over history items, (B, N); each row sums to 1 over valid items, rows with no valid item are 0.

        Args:
            history_emb: (B, N, encoder_dim).
            history_mask: (B, N) bool/int, True for real items.
            query_emb: (B, encoder_dim) normalised input embedding (ignored for aggregation="mean").
        """
        mask = history_mask.to(torch.bool)  # (B, N)
        if self.config.aggregation == "mean" or query_emb is None:
            w = mask.float()
        else:
            w = self.input_aware_weights(history_emb, mask, query_emb)
            gate = self.mix_gate()
            if gate is not None:
                uniform = mask.float() / mask.float().sum(dim=-1, keepdim=True).clamp_min(1.0)
                w = gate * w + (1 - gate) * uniform
        return w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    def input_aware_weights(self, history_emb: torch.Tensor, history_mask: torch.Tensor,
                            query_emb: torch.Tensor) -> torch.Tensor:
        """The input-aware attention alone, softmax_i(h_i . e_x / tau) over valid items: (B, N); all-masked rows 0.

        What `attention_weights` uses for "input_aware", and blends with the history mean for "mixed"."""
        return similarity_weights(history_emb, history_mask, query_emb, self.config.temperature)

    def mix_gate(self) -> torch.Tensor | None:
        """g, the share of the input-aware attention in a "mixed" aggregation (the rest is the history mean);
        None for the other aggregations."""
        if self.config.aggregation != "mixed" or not hasattr(self, "mix_logit"):
            return None
        return torch.sigmoid(self.mix_logit)

    def user_embedding(self, history_emb: torch.Tensor, history_mask: torch.Tensor,
                       query_emb: torch.Tensor | None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """P_u: (B, T, token_dim). Rows without history get the learned default user vector.

        `weights` (B, N): precomputed `attention_weights` (forward shares them with the label token)."""
        device = self._device()
        history_emb = history_emb.to(device).float()
        history_mask = history_mask.to(device)
        b, n, _ = history_emb.shape
        if n == 0:
            return self.default_user.unsqueeze(0).expand(b, -1, -1)
        w = weights if weights is not None else self.attention_weights(history_emb, history_mask, query_emb)
        proj = self.projector(history_emb)  # (B, N, T * token_dim)
        user = torch.einsum("bn,bnk->bk", w, proj).view(b, self.num_user_tokens, self.token_dim)  # (B, T, D)
        has_history = history_mask.to(torch.bool).any(dim=-1)  # (B,)
        return torch.where(has_history[:, None, None], user, self.default_user.unsqueeze(0))

    def instruction(self, batch_size: int) -> torch.Tensor:
        """Instruction embedding I repeated over the batch: (B, 1, token_dim)."""
        return self.instruction_mlp(self.instruction_vector).unsqueeze(0).expand(batch_size, -1, -1)

    def stats_token(self, stats: torch.Tensor) -> torch.Tensor:
        """S_u: (B, stats_dim) history statistics -> (B, 1, token_dim)."""
        if stats.dim() != 2 or stats.shape[1] != self.stats_dim:
            raise ValueError(f"history stats must be (batch, {self.stats_dim}) for {self.config.task}, "
                             f"got {tuple(stats.shape)}")
        stats = stats.to(self._device()).float()
        out = self.stats_mlp(stats)  # (B, D)
        if self.config.stats_reads_labels:
            out = out + stats[:, : self.label_table.shape[0]] @ self.label_table  # shares (B, C) @ (C, D)
        return out.unsqueeze(1)

    def label_shares(self, weights: torch.Tensor, history_labels: torch.Tensor) -> torch.Tensor:
        """`label_shares` over this task's labels: (B, N) weights + (B, N) label indices -> (B, C)."""
        return label_shares(weights, history_labels, len(get_task(self.config.task).labels))

    def attention_label_shares(self, history_emb: torch.Tensor, history_mask: torch.Tensor,
                               query_emb: torch.Tensor, history_labels: torch.Tensor) -> torch.Tensor:
        """(B, C) on the CPU: the labels of the past items weighted by the input-aware attention alone (no mean
        blend), what `history_mix_prior: attention` mixes in; zeros for a row without labelled items.
        query_emb (B, encoder_dim): e_x from `embed_query`."""
        b, n = history_emb.shape[:2]
        if n == 0:
            return torch.zeros(b, len(get_task(self.config.task).labels))
        w = self.input_aware_weights(history_emb.to(self._device()).float(), history_mask.to(self._device()),
                                     query_emb.to(self._device()).float())  # (B, N)
        return self.label_shares(w, history_labels).cpu()

    def attention_label_loss(self, history_emb: torch.Tensor, history_mask: torch.Tensor,
                             queries: Sequence[str] | torch.Tensor, history_labels: torch.Tensor,
                             gold: torch.Tensor) -> torch.Tensor:
        """Scalar: mean over rows of -log sum_i w_i [y_i = gold], w the input-aware attention alone over the
        items that hold a label (what `attention_label_shares` reads), gold (B,) label indices. Rows whose
        history holds no item with the gold label are left out (no weighting reaches it: a constant, no
        gradient); 0 when no row is left. `PPlugConfig.attention_label_loss_weight`."""
        device = self._device()
        labels = history_labels.to(device).long()  # (B, N)
        reachable = ((labels == gold.to(device)[:, None]) & history_mask.to(device).bool()).any(dim=-1)  # (B,)
        if not bool(reachable.any()):  # also every row of an empty history
            return torch.zeros((), device=device)
        keep = reachable.nonzero().squeeze(-1)
        q = self.embed_query([queries[i] for i in keep.tolist()] if not isinstance(queries, torch.Tensor)
                             else queries.to(device)[keep])  # (R, d_enc): only the rows the term reads
        w = self.input_aware_weights(history_emb.to(device).float()[keep], history_mask.to(device)[keep], q)
        shares = self.label_shares(w, labels[keep])  # (R, C)
        p_gold = shares.gather(1, gold.to(device)[keep, None]).squeeze(1)  # (R,), > 0: the gold is reachable
        return -p_gold.clamp_min(1e-12).log().mean()

    def label_token(self, weights: torch.Tensor, history_labels: torch.Tensor) -> torch.Tensor:
        """A_u: (B, N) attention weights + (B, N) label index per item (-1: none) -> (B, 1, token_dim), the
        attended label shares (`label_shares`) over the trainable label table."""
        return (self.label_shares(weights, history_labels) @ self.label_table).unsqueeze(1)  # (B, 1, D)

    def forward(self, history_emb: torch.Tensor, history_mask: torch.Tensor,
                queries: Sequence[str] | torch.Tensor | None = None,
                stats: torch.Tensor | None = None, history_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Soft prompt for each row: (B, P, token_dim) = [instruction; user tokens; statistics; labels; input].

        Args:
            history_emb: (B, N, encoder_dim) history embeddings (N may be 0).
            history_mask: (B, N), True for real items.
            queries: B texts or (B, encoder_dim) frozen embeddings; may be None when `needs_query` is False.
            stats: (B, stats_dim) `TaskSpec.history_stats` per row; needed with `config.user_stats`.
            history_labels: (B, N) long label index per history item, -1 for none; needed with `label_token`.
        """
        b = history_emb.shape[0]
        parts = []
        if self.config.use_instruction:
            parts.append(self.instruction(b))
        if self.config.use_user_embedding:
            q = None
            has_history = history_emb.shape[1] > 0 and bool(history_mask.any())
            if self.needs_query and (has_history or self.config.input_token):
                if queries is None:
                    raise ValueError("input-aware aggregation and input_token need the queries")
                q = self.embed_query(queries)  # (B, encoder_dim)
            n = history_emb.shape[1]
            w = None
            if n:
                w = self.attention_weights(history_emb.to(self._device()).float(),
                                           history_mask.to(self._device()), q)  # (B, N)
            parts.append(self.user_embedding(history_emb, history_mask, q, weights=w))
            if self.config.user_stats:
                if stats is None:
                    raise ValueError("config.user_stats: the embedder needs each row's history statistics")
                parts.append(self.stats_token(stats))
            if self.config.label_token:
                if history_labels is None:
                    raise ValueError("config.label_token: the embedder needs the label of each history item")
                if n == 0:
                    parts.append(torch.zeros(b, 1, self.token_dim, device=self._device()))
                else:
                    parts.append(self.label_token(w, history_labels))
            if self.config.input_token:
                parts.append(self.input_mlp(q).unsqueeze(1))  # (B, 1, token_dim)
        return torch.cat(parts, dim=1)


__all__ = ["UserEmbedder", "history_label_tensor", "label_shares", "similarity_weights"]
