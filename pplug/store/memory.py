"""The long-term memory of the user store: one history embedding (float16) per interaction and encoder, and
a faiss index over a user's vectors, built on demand and kept per process (`recall`). A backend may search
in the database instead (`_search`: PostgreSQL with pgvector)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .schema import Interaction


class MemoryVectors:
    """The memory-vector methods of `pplug.store.base.UserStoreBase` (its connection, locks and `history`)."""

    _indexes: dict[tuple[str, str], tuple[Any, Any]]

    def _insert_memory(self, c: Any, user_id: str, ids: Sequence[int], vecs: np.ndarray, encoder: str) -> None:
        """Inside a write: store (N, dim) float32 vectors (kept as float16) of the interactions `ids`."""
        for i, v in zip(ids, vecs):
            c.execute(
                "INSERT INTO memory VALUES (?, ?, ?, ?) ON CONFLICT (interaction_id, encoder) "
                "DO UPDATE SET user_id = excluded.user_id, vec = excluded.vec",
                (int(i), encoder, user_id, v.astype(np.float16).tobytes()),
            )

    def add_memory(self, user_id: str, ids: Sequence[int], embeddings: Any, encoder: str) -> None:
        """Store memory vectors for existing interactions (e.g. with a second encoder)."""
        vecs = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, np.float32)
        with self._write() as c:
            self._insert_memory(c, user_id, ids, vecs, encoder)

    def memory_vectors(self, user_id: str, encoder: str) -> tuple[list[int], np.ndarray]:
        """(interaction ids, (N, dim) float32 vectors) stored for the user under `encoder`."""
        self._require(user_id)
        rows = self._read(
            "SELECT interaction_id, vec FROM memory WHERE user_id = ? AND encoder = ? ORDER BY interaction_id",
            (user_id, encoder),
        )
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [int(r[0]) for r in rows], np.stack([np.frombuffer(r[1], np.float16).astype(np.float32) for r in rows])

    def _index(self, user_id: str, encoder: str):
        """The user's faiss index (cached per process; rebuilt when new memory rows arrived or the user changed)."""
        from pplug.encode.history import HistoryIndex

        count = self._read("SELECT COUNT(*) FROM memory WHERE user_id = ? AND encoder = ?", (user_id, encoder))
        n = (int(count[0][0]), self.user_version(user_id))  # the version: erased and created again, same count
        cached = self._indexes.get((user_id, encoder))
        if cached is not None and cached[0] == n:
            return cached[1]
        ids, vecs = self.memory_vectors(user_id, encoder)
        index = None
        if ids:
            index = HistoryIndex(vecs.shape[1])
            index.add(vecs, ids=ids)
        self._indexes[(user_id, encoder)] = (n, index)
        return index

    def recall(self, user_id: str, query: str, k: int, encoder: Any) -> list[tuple[Interaction, float]]:
        """Long-term memory: the user's `k` interactions most similar to `query`.

        Interactions added without memory vectors for this encoder are embedded now (through the
        encoder's cache) and their vectors stored, so the index always covers the whole history.

        Args:
            user_id: the user.
            query: text to match (e.g. the current input's content).
            k: how many to return.
            encoder: a `pplug.encode.history.HistoryEncoder` (its identity names the vectors).

        Returns:
            (interaction, cosine similarity) pairs, best first.
        """
        self._require(user_id)
        self.backfill_memory(user_id, encoder)
        if k <= 0:
            return []
        hits = self._search(user_id, encoder.identity, encoder.encode([query])[0], k)
        by_id = {r.id: r for r in self.history(user_id)}
        return [(by_id[i], s) for i, s in hits if i in by_id]

    def _search(self, user_id: str, encoder: str, query: Any, k: int) -> list[tuple[int, float]]:
        """(interaction id, cosine similarity) of the user's `k` memory vectors nearest to `query`, best first."""
        index = self._index(user_id, encoder)
        return [] if index is None else index.search(query, k)

    def backfill_memory(self, user_id: str, encoder: Any) -> int:
        """Embed and store memory vectors for interactions that lack them; returns how many."""
        from pplug.core.tasks import get_task

        rows = self._read(
            "SELECT i.id, i.task, i.item FROM interactions i LEFT JOIN memory m "
            "ON m.interaction_id = i.id AND m.encoder = ? WHERE i.user_id = ? AND m.interaction_id IS NULL "
            "ORDER BY i.id",
            (encoder.identity, user_id),
        )
        if not rows:
            return 0
        texts = []
        for _, task, item in rows:
            item = json.loads(item)
            texts.append(get_task(task).history_text(item) if task else json.dumps(item, sort_keys=True))
        self.add_memory(user_id, [r[0] for r in rows], encoder.encode(texts), encoder.identity)
        return len(rows)


__all__ = ["MemoryVectors"]
