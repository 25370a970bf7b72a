"""Retrieval and the batches of every method: examples -> prompts, queries and histories.

Retrieval ranks the user's history items with a small BM25 over `task.history_text(item)` (default; LaMP's
baseline) or with embedding similarity of the frozen sentence encoder (`pplug.encode.history.top_k`). `build_batch`
turns examples into a `PPlugBatch` for a method (`pplug.methods`); the data module, evaluation and
generation all call it, so every path sees the same prompts. The method registry is importable from here too.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pplug.core.batch import PPlugBatch

from .prompts import DEFAULT_MAX_ITEM_WORDS, compose_prompt
from .registry import METHODS, RETRIEVERS, Method, MethodSpec, get_method, method_config, resolve_k

# --- BM25 ---

_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be but by for from has have i in is it its of on or that the this to was were will with"
    " you your my me we our they their he she his her not so very just".split()
)


def bm25_tokens(text: str) -> list[str]:
    """Lowercase alphanumeric tokens without a few English stop words (what BM25 matches on)."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


class BM25:
    """Okapi BM25 over a small corpus (one user's history), dependency-free.

    Args:
        docs: the documents' texts.
        k1: term-frequency saturation.
        b: length normalisation.
    """

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(bm25_tokens(d)) for d in docs]
        self.lengths = [sum(c.values()) for c in self.docs]
        self.avg_len = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        df: Counter = Counter()
        for c in self.docs:
            df.update(c.keys())
        n = len(self.docs)
        # The "+1" form of IDF (Lucene) stays positive for terms in more than half of the documents.
        self.idf = {t: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: str) -> list[float]:
        """BM25 score of every document for `query`."""
        q = bm25_tokens(query)
        out = []
        for c, length in zip(self.docs, self.lengths):
            s = 0.0
            norm = self.k1 * (1.0 - self.b + self.b * length / self.avg_len) if self.avg_len else self.k1
            for t in q:
                tf = c.get(t)
                if tf:
                    s += self.idf[t] * tf * (self.k1 + 1.0) / (tf + norm)
            out.append(s)
        return out

    def top_k(self, query: str, k: int) -> list[int]:
        """Indices of the k best documents, best first; ties go to the more recent (later) document."""
        s = self.scores(query)
        order = sorted(range(len(s)), key=lambda i: (-s[i], -i))
        return order[:k]


def recent_history(profile: Sequence[dict], max_history: int | None) -> list[dict]:
    """The most recent `max_history` profile items (profiles are stored oldest first)."""
    items = list(profile)
    if max_history is not None and len(items) > max_history:
        items = items[-max_history:]
    return items


def retrieve(
    task: Any,
    example: Any,
    k: int,
    retriever: str = "bm25",
    encoder: Any = None,
    max_history: int | None = None,
) -> list[dict]:
    """The k history items of `example.profile` most relevant to its input, most relevant first.

    Args:
        task: TaskSpec (`query_text` gives the query, `history_text` the item texts).
        example: a pplug.lamp.data.Example.
        k: items to return (fewer when the history is shorter).
        retriever: "bm25" or "embedding" (frozen sentence encoder + `pplug.encode.history.top_k`; needs `encoder`).
        encoder: a pplug.encode.history.HistoryEncoder, for `retriever="embedding"`.
        max_history: only the most recent items are candidates (as for the user embedding).
    """
    items = recent_history(example.profile, max_history)
    if k <= 0 or not items:
        return []
    texts = [task.history_text(it) for it in items]
    query = task.query_text(example.input)
    if retriever == "bm25":
        idx = BM25(texts).top_k(query, k)
    elif retriever == "embedding":
        if encoder is None:
            raise ValueError("retriever 'embedding' needs a history encoder")
        from pplug.encode.history import top_k

        emb = encoder.encode(texts)  # (N, d)
        q = encoder.encode([query])[0]  # (d,)
        idx = top_k(emb, q, min(k, len(texts)))
    else:
        raise ValueError(f"unknown retriever {retriever!r}; known: {', '.join(RETRIEVERS)}")
    return [items[i] for i in idx]


def build_batch(
    task: Any,
    examples: Sequence[Any],
    method: str | MethodSpec,
    causal: bool = True,
    max_history: int | None = None,
    retrieved: Sequence[Sequence[dict]] | None = None,
    retrieval_k: int | None = None,
    retriever: str = "bm25",
    encoder: Any = None,
    personas: Sequence[str | None] | None = None,
    with_targets: bool = True,
    max_item_words: int | None = DEFAULT_MAX_ITEM_WORDS,
    budget: Any = None,
):
    """Examples -> a text-level `PPlugBatch` for `method` (prompts, queries, histories, targets).

    Args:
        task: the TaskSpec.
        examples: pplug.lamp.data.Example records (rows may belong to different users).
        method: method name or spec; decides retrieval in the prompt and whether histories are passed.
        causal: whether the LLM is decoder-only (adds the answer cue).
        max_history: most recent history items kept per row.
        retrieved: precomputed retrieved items per row (skips retrieval); None retrieves here when needed.
        retrieval_k: items per prompt for retrieval methods (None = the method's default).
        retriever, encoder: see `retrieve`.
        personas: optional persona text per row.
        with_targets: include `example.output` as targets (training / loss); rows must all have outputs.
        max_item_words: words kept per retrieved item.
        budget: the LLM's `PromptBudget` (`FrozenLLM.prompt_budget()`): retrieved items get only the tokens
            the rest of the prompt leaves. None: no fitting.
    """
    spec = get_method(method)
    k = resolve_k(spec, retrieval_k)
    prompts, queries, histories, stats, labels = [], [], [], [], []
    for i, ex in enumerate(examples):
        items: Sequence[dict] = ()
        if k:
            items = retrieved[i][:k] if retrieved is not None else retrieve(
                task, ex, k, retriever=retriever, encoder=encoder, max_history=max_history
            )
        persona = personas[i] if personas is not None else None
        prompts.append(compose_prompt(task, ex.input, items, persona=persona, causal=causal,
                                      max_item_words=max_item_words, budget=budget))
        queries.append(task.query_text(ex.input))
        hist = recent_history(ex.profile, max_history)
        # Methods without a user embedding never look at the history text: skip encoding it. Its statistics
        # are cheap and serve decoding too (`history_mix_items`).
        histories.append([task.history_text(it) for it in hist] if spec.use_user_embedding else [])
        stats.append(task.history_stats(hist))
        labels.append(task.history_label_indices(hist) if spec.use_user_embedding else [])
    targets = None
    if with_targets:
        missing = [ex.id for ex in examples if ex.output is None]
        if missing:
            raise ValueError(f"record {missing[0]}: field 'output': missing (needed as a training target)")
        targets = [str(ex.output) for ex in examples]
    return PPlugBatch(prompts=prompts, queries=queries, histories=histories, targets=targets, history_stats=stats,
                      history_labels=labels if task.labels and task.output_field else None)


__all__ = [
    "BM25",
    "METHODS",
    "Method",
    "MethodSpec",
    "RETRIEVERS",
    "bm25_tokens",
    "build_batch",
    "get_method",
    "method_config",
    "recent_history",
    "resolve_k",
    "retrieve",
]
