"""Choosing among candidates: MBR and user-preference decoding for generation tasks, set per row.

    rows --greedy--> 1 candidate  \
    rows --FrozenLLM.sample--> N   +--> Candidates (K = 1 + N per row) --select--> one output per row
                                  /        mbr:        argmax_k  E_j[utility(c_k, c_j)]       (consensus)
                                           preference: argmax_k  (1 - w) * consensus + w * preference
                                           reward-mbr: argmax_k  (1 - w) * consensus + w * reward (facet models)

- The greedy output is always candidate 0, so a selection can fall back to it; ties go to it too.
- Consensus is the expected utility of a candidate against the rest of the pool (duplicates count: the
  samples approximate the model's distribution). Utilities: "rouge1" / "rougeL" (F-measure, the scorer and
  tokenizer of `pplug.lamp.metrics`), "embedding" (cosine of the history encoder's L2-normalised vectors), or any
  callable (a, b) -> float; a callable with a `.matrix(texts) -> (K, K)` attribute is used batched.
- Preference is the mean cosine similarity of a candidate to the user's own past outputs (profile titles /
  subjects / tweets, `user_outputs`) under the cached history encoder. A row without past outputs falls back
  to consensus. Both scores are min-max scaled within the row's pool before mixing, so the weight `w`
  trades ranks, not units (ROUGE and cosine live on different scales).
- Per row: each row carries a `DecodingSpec`. All sampled rows share one `FrozenLLM.sample` pass: every
  sequence draws from its own generator seeded from (spec.seed, row key, sample index), so a row's output
  is the same alone or in any batch (row keys are the example ids; without them, the row's batch index).
- Reward-mbr: the reward is the user's weighted sum of trained facet preference models (length, formality,
  topic; `pplug.decode.preference`), the weights retrieved from the user's persona text; each row names its
  own folder of facet models (`DecodingSpec.preference_models`) and may carry its own facet weights.
  Greedy rows share one greedy pass; beam rows one pass per beam width.

Ratings and labels keep their own decodings (argmax / expected / median in `pplug.decode.inference.decode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from pplug.core.tasks import DECODINGS_BY_KIND, OutputKind
from pplug.lamp.metrics import _rouge_scorer
from pplug.modeling.protocol import Personalizer
from pplug.modeling.sampling import row_seed

GENERATION_DECODINGS = tuple(d for d in DECODINGS_BY_KIND[OutputKind.GENERATION] if d != "argmax")
UTILITIES = ("rouge1", "rougeL", "embedding")
Utility = str | Callable[[str, str], float]


@dataclass(frozen=True)
class DecodingSpec:
    """How one row is decoded (generation tasks).

    Attributes:
        name: "greedy", "beam", "mbr", "preference" or "reward-mbr".
        num_samples: sampled candidates besides the greedy one (mbr / preference / reward-mbr).
        temperature: sampling temperature (> 0).
        top_p: nucleus mass kept when sampling, in (0, 1].
        preference_weight: w in (1 - w) * consensus + w * preference (or reward), in [0, 1] (preference,
            reward-mbr).
        utility: "rouge1", "rougeL", "embedding" or a callable (a, b) -> float (the consensus utility).
        num_beams: beams of "beam".
        seed: sampling seed; each row's seed is derived from it and the row key.
        preference_models: folder of facet preference models (`pplug prefs train`; reward-mbr only).
    """

    name: str = "greedy"
    num_samples: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    preference_weight: float = 0.5
    utility: Utility = "rouge1"
    num_beams: int = 4
    seed: int = 0
    preference_models: str | None = None

    def __post_init__(self) -> None:
        if self.name not in GENERATION_DECODINGS:
            raise ValueError(f"decoding must be one of {GENERATION_DECODINGS}, got {self.name!r}")
        if self.num_samples < 1 or self.temperature <= 0 or not 0 < self.top_p <= 1 or self.num_beams < 1:
            raise ValueError(f"decoding {self.name}: num_samples >= 1, temperature > 0, top_p in (0, 1] and "
                             f"num_beams >= 1 needed (got {self.num_samples}, {self.temperature}, {self.top_p}, "
                             f"{self.num_beams})")
        if not 0 <= self.preference_weight <= 1:
            raise ValueError(f"preference_weight must be in [0, 1], got {self.preference_weight}")
        if isinstance(self.utility, str) and self.utility not in UTILITIES:
            raise ValueError(f"utility must be one of {UTILITIES} or a callable, got {self.utility!r}")
        if self.name == "reward-mbr" and not self.preference_models:
            raise ValueError("decoding reward-mbr needs preference_models (a folder `pplug prefs train` wrote)")

    @property
    def samples(self) -> bool:
        return self.name in ("mbr", "preference", "reward-mbr")


@dataclass
class Candidates:
    """One row's candidate pool: texts[0] is the greedy output, the rest are samples."""

    texts: list[str]
    scores: list[float] = field(default_factory=list)
    """The selection score of every candidate (filled by the select functions)."""

    def __post_init__(self) -> None:
        if not self.texts:
            raise ValueError("Candidates: a pool needs at least the greedy candidate")


@dataclass
class RowContext:
    """What only the caller knows about a batch's rows: stable keys (example ids, for the sampling seeds),
    each user's past outputs (preference decoding) and the history encoder (preference, embedding utility);
    for reward-mbr each user's history (profile items, whose persona text retrieves the facet weights) or the
    facet weights themselves (facet -> weight; a row's None: retrieved)."""

    keys: list[str] | None = None
    user_outputs: list[list[str]] | None = None
    encoder: Any = None
    profiles: list[Sequence[dict]] | None = None
    facet_weights: list[dict[str, float] | None] | None = None


def user_outputs(task: Any, profile: Sequence[dict], max_history: int | None = None) -> list[str]:
    """The user's own past outputs for `task` (e.g. paper / email titles), most recent `max_history` items."""
    from pplug.core.tasks import get_task

    spec = get_task(task)
    name = spec.output_field if spec.is_generation else ""
    if not name:
        return []
    items = list(profile)[-max_history:] if max_history else list(profile)
    return [str(it[name]).strip() for it in items if str(it.get(name) or "").strip()]


# --------------------------------------------------------------------------------------------------
# utilities and selection rules (pure functions of texts)


def utility_matrix(texts: Sequence[str], utility: Utility, encoder: Any = None) -> torch.Tensor:
    """(K, K) float32 matrix u[i, j] = utility(texts[i], texts[j]); each distinct pair is computed once."""
    uniq = list(dict.fromkeys(texts))
    where = torch.tensor([uniq.index(t) for t in texts])  # (K,) index into uniq
    u = len(uniq)
    if utility == "embedding":
        if encoder is None:
            raise ValueError("utility 'embedding' needs the history encoder (RowContext.encoder)")
        emb = _embed(encoder, uniq)  # (U, d), L2-normalised
        m = emb @ emb.T
    elif hasattr(utility, "matrix"):
        m = torch.as_tensor(utility.matrix(uniq), dtype=torch.float32)
    else:
        m = torch.zeros(u, u)
        scorer = _rouge_scorer() if utility in ("rouge1", "rougeL") else None
        for i in range(u):
            for j in range(i, u):
                if scorer is not None:  # F-measure is symmetric: score(target, prediction) either way
                    v = scorer.score(uniq[i].strip(), uniq[j].strip())[utility].fmeasure
                    m[i, j] = m[j, i] = v
                else:  # a user callable need not be symmetric
                    m[i, j] = float(utility(uniq[i], uniq[j]))
                    m[j, i] = float(utility(uniq[j], uniq[i])) if i != j else m[i, j]
    return m[where][:, where]


def consensus(texts: Sequence[str], utility: Utility = "rouge1", encoder: Any = None) -> torch.Tensor:
    """(K,) expected utility of each candidate against the other K - 1 (a single candidate scores 0)."""
    k = len(texts)
    if k < 2:
        return torch.zeros(k)
    m = utility_matrix(texts, utility, encoder)  # (K, K)
    return (m.sum(dim=1) - m.diagonal()) / (k - 1)


def preference(texts: Sequence[str], past: Sequence[str], encoder: Any) -> torch.Tensor:
    """(K,) mean cosine similarity of each candidate to the user's past outputs (zeros without any)."""
    if not past:
        return torch.zeros(len(texts))
    cand = _embed(encoder, texts)  # (K, d)
    hist = encoder.encode(list(past)).float()  # (H, d), the user's own texts: cached like their history
    return (cand @ hist.T).mean(dim=1)


def _embed(encoder: Any, texts: Sequence[str]) -> torch.Tensor:
    """L2-normalised embeddings of candidates, (K, d). Candidates are throwaway texts: a HistoryEncoder runs
    them without its persistent cache (which would otherwise fill with every sample ever drawn)."""
    run = getattr(encoder, "_run_encoder", None)
    if run is not None:
        return torch.from_numpy(run(list(texts))).float()
    return encoder.encode(list(texts)).float()


def _minmax(x: torch.Tensor) -> torch.Tensor:
    span = x.max() - x.min() if x.numel() else x.new_zeros(())
    return (x - x.min()) / span if span > 0 else torch.zeros_like(x)


def _pick(cands: Candidates, scores: torch.Tensor) -> int:
    cands.scores = [float(s) for s in scores]
    return int(torch.argmax(scores))  # first maximum: ties go to the greedy candidate (index 0)


def mbr_select(cands: Candidates, utility: Utility = "rouge1", encoder: Any = None) -> int:
    """Index of the minimum-Bayes-risk candidate: the highest expected utility against the others."""
    return _pick(cands, consensus(cands.texts, utility, encoder))


def preference_select(cands: Candidates, past: Sequence[str], encoder: Any, weight: float = 0.5,
                      utility: Utility = "rouge1") -> int:
    """Index of the candidate maximising (1 - w) * consensus + w * preference (both min-max scaled in the pool)."""
    score = (1 - weight) * _minmax(consensus(cands.texts, utility, encoder))
    if weight > 0 and past:
        score = score + weight * _minmax(preference(cands.texts, past, encoder))
    return _pick(cands, score)


def reward_mbr_select(cands: Candidates, reward: torch.Tensor | None, weight: float = 0.5, utility: Utility = "rouge1",
                      encoder: Any = None) -> int:
    """Index of the candidate maximising (1 - w) * consensus + w * reward (both min-max scaled in the pool; the
    reward: `pplug.decode.preference.row_rewards`); without a reward (no past outputs) consensus alone."""
    score = (1 - weight) * _minmax(consensus(cands.texts, utility, encoder))
    if weight > 0 and reward is not None:
        score = score + weight * _minmax(reward)
    return _pick(cands, score)


# --------------------------------------------------------------------------------------------------
# per-row decoding of a batch


def candidate_pools(model: Personalizer, batch: Any, specs: Sequence[DecodingSpec], max_new_tokens: int,
                    keys: Sequence[str], clean: Callable[[str], str] = str.strip,
                    prefix: torch.Tensor | None = None, first_line: bool = False) -> list[Candidates | None]:
    """Greedy + `num_samples` samples for every sampling row (None for greedy / beam rows), in one greedy and
    one sampling pass. `model` is a PPlugModel (its prefix) or anything with `.llm` (no prefix).
    `first_line`: stop each sequence after its first non-empty line (only when `clean` keeps just that line)."""
    rows = [i for i, s in enumerate(specs) if s.samples]
    pools: list[Candidates | None] = [None] * len(specs)
    if not rows:
        return pools
    llm = model.llm
    if prefix is None:
        prefix = _prefix(model, batch)
    sub = prefix[rows] if prefix is not None else None  # (R, P, D)
    prompts = [batch.prompts[i] for i in rows]
    position = getattr(model, "soft_prompt_position", "prefix")  # where the model puts its soft prompt
    greedy = llm.generate(sub, prompts, max_new_tokens=max_new_tokens, position=position,
                          first_line=first_line)
    sampled = llm.sample(sub, prompts, num_samples=[specs[i].num_samples for i in rows],
                         temperature=[specs[i].temperature for i in rows], top_p=[specs[i].top_p for i in rows],
                         max_new_tokens=max_new_tokens, seed=[row_seed(specs[i].seed, keys[i]) for i in rows],
                         first_line=first_line, position=position)
    for i, g, s in zip(rows, greedy, sampled):
        pools[i] = Candidates([clean(g)] + [clean(t) for t in s])
    return pools


def decode_rows(model: Personalizer, batch: Any, specs: Sequence[DecodingSpec], max_new_tokens: int,
                rows: RowContext | None = None, clean: Callable[[str], str] = str.strip,
                stats: dict | None = None, first_line: bool = False) -> list[str]:
    """One output per row, each row decoded with its own spec (see the module docstring).

    Args:
        model: a PPlugModel, or anything with `.llm` (the `none` baseline: no prefix).
        batch: a PPlugBatch (prompts, queries, histories).
        specs: one DecodingSpec per row.
        max_new_tokens: generation budget (shared by the batch).
        rows: row keys, users' past outputs and the encoder (None: batch indices, no past outputs, the
            model's history encoder).
        clean: applied to every candidate before selection (e.g. keep the first line).
        first_line: `clean` keeps only the first non-empty line, so every sequence may stop there (a beam
            search ranks its beams as finished lines).
        stats: if given, "rows", "candidates" and "seconds" are added to it (the cost of this batch).
    """
    t0 = time.monotonic()
    b = len(batch.prompts)
    if len(specs) != b:
        raise ValueError(f"decode_rows: {len(specs)} specs for {b} rows")
    rows = rows or RowContext()
    keys = list(rows.keys) if rows.keys is not None else [str(i) for i in range(b)]
    past = rows.user_outputs if rows.user_outputs is not None else [[] for _ in range(b)]
    encoder = rows.encoder if rows.encoder is not None else getattr(model, "history_encoder", None)
    if any(s.name in ("preference", "reward-mbr") or s.utility == "embedding" for s in specs) and encoder is None:
        raise ValueError("preference / reward-mbr decoding and the embedding utility need a history encoder")
    llm = model.llm
    prefix = _prefix(model, batch)  # (B, P, D) or None; computed once for every pass
    out: list[str] = [""] * b
    n_cands = 0
    widths = {1 if s.name == "greedy" else s.num_beams for s in specs if not s.samples}
    for width in sorted(widths):  # greedy rows, then one pass per beam width
        idx = [i for i, s in enumerate(specs) if not s.samples and (1 if s.name == "greedy" else s.num_beams) == width]
        texts = llm.generate(prefix[idx] if prefix is not None else None, [batch.prompts[i] for i in idx],
                             position=getattr(model, "soft_prompt_position", "prefix"),
                             max_new_tokens=max_new_tokens, num_beams=width,
                             first_line=first_line)
        for i, t in zip(idx, texts):
            out[i] = clean(t)
        n_cands += len(idx)
    pools = candidate_pools(model, batch, specs, max_new_tokens, keys, clean, prefix, first_line)
    rewards: list = [None] * b
    if any(s.name == "reward-mbr" for s in specs):
        from .preference import row_rewards

        rewards = row_rewards(specs, pools, replace(rows, user_outputs=past), encoder)
    for i, pool in enumerate(pools):
        if pool is None:
            continue
        s = specs[i]
        if s.name == "mbr":
            k = mbr_select(pool, s.utility, encoder)
        elif s.name == "reward-mbr":
            k = reward_mbr_select(pool, rewards[i], s.preference_weight, s.utility, encoder)
        else:
            k = preference_select(pool, past[i], encoder, s.preference_weight, s.utility)
        out[i] = pool.texts[k]
        n_cands += len(pool.texts)
    if stats is not None:
        stats["rows"] = stats.get("rows", 0) + b
        stats["candidates"] = stats.get("candidates", 0) + n_cands
        stats["seconds"] = stats.get("seconds", 0.0) + time.monotonic() - t0
    return out


def _prefix(model: Personalizer, batch: Any) -> torch.Tensor | None:
    """The model's soft prompt for the batch, (B, P, D); None for models without one (the `none` baseline)."""
    return model.prefix(batch) if hasattr(model, "prefix") else None


def make_specs(decoding: str | DecodingSpec, n: int, options: DecodingSpec | None = None) -> list[DecodingSpec]:
    """`n` copies of a spec: a DecodingSpec as given, a name with the settings of `options` ("argmax" = greedy)."""
    if isinstance(decoding, DecodingSpec):
        return [decoding] * n
    name = "greedy" if decoding == "argmax" else decoding
    return [replace(options or DecodingSpec(), name=name)] * n


__all__ = [
    "GENERATION_DECODINGS",
    "UTILITIES",
    "Candidates",
    "DecodingSpec",
    "RowContext",
    "candidate_pools",
    "consensus",
    "decode_rows",
    "make_specs",
    "mbr_select",
    "preference",
    "preference_select",
    "reward_mbr_select",
    "user_outputs",
    "utility_matrix",
]
