"""Privacy mode: a user's soft-prompt inputs computed where the history lives; the server never sees it.

`embed_user` (CLI `pplug embed-user`) runs only the checkpoint's *frozen* sentence encoder (no LLM, no
trained weights) over the user's local history and writes a "user vector" document:

    {
      "format": "pplug-user-vector/1",
      "encoder": "<encoder identity>",   # e.g. "all-MiniLM-L6-v2-<weights hash>": must match the server's
      "task": "LaMP_3",
      "dim": 384,
      "embeddings": [[...384 floats...], ...],   # one L2-normalised row per history item, oldest first,
                                                 # at most the checkpoint's max_history most recent items
      "persona": null,                           # optional text the client chooses to put in the prompt
      "stats": [...]                             # only for checkpoints that read them (`user_stats`,
    }                                            # `history_mix_items`): TaskSpec.history_stats of the same
                                                 # items (rating shares, output lengths, size)

The client sends this document as `user_vector` in a completion request instead of a `user` id. Exactly that
is sent: N x dim floats, the encoder identity, the task name, (only if the client sets it) persona text,
(only for a checkpoint with `user_stats` or `history_mix_items`) a few summary numbers of the history (the share of each
rating or label, the mean and spread of output lengths, the number of items), plus the request's input
itself. No history text, item ids, timestamps or single scores leave the client, and the
server keeps nothing of the request (it is not written to the store or the embedding cache).

Why embeddings and not the finished soft prompt: PPlug's soft prompt weighs every history item against the
current input (input-aware attention), so it can only be finished on the server once the input is known;
sending the frozen embeddings lets the server's trained embedder do exactly what it does for stored users
(same outputs for the same history). A client that wants to hide even the embeddings would have to run the
trained embedder itself, for one fixed input at a time.

What an embedding can leak: a sentence embedding is not anonymous. Inversion attacks (e.g. Vec2Text, Morris
et al. 2023) reconstruct much of a short text from its embedding when the encoder is known, and nearest-
neighbour search against a corpus reveals topics, authorship style and near-duplicates. Treat the document
as personal data in transit (TLS) and do not log it; it hides the raw text from casual storage, it is no
cryptographic protection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pplug.core.checkpoints import resolve as resolve_checkpoint
from pplug.modeling.model import PPlugModel

USER_VECTOR_FORMAT = "pplug-user-vector/1"


def embed_user(checkpoint: str | Path, items: Sequence[dict], task: str | None = None, encoder: Any = None) -> dict:
    """A user vector document (see the module docstring) from local history items.

    Args:
        checkpoint: run or checkpoint folder (only its config is read: encoder, task, max_history).
        items: LaMP profile items of the user, oldest first.
        task: the items' task (default: the checkpoint's).
        encoder: an already loaded HistoryEncoder (default: the checkpoint's encoder with a private
            in-memory cache, so nothing of the history is written to disk here either).
    """
    from pplug.core.tasks import get_task
    from pplug.encode.history import HistoryEncoder

    folder = resolve_checkpoint(checkpoint)
    config, meta = PPlugModel.load_checkpoint_config(folder)
    spec = get_task(task or config.task)
    if config.reads_history_labels:
        raise ValueError(f"{folder}: this checkpoint reads the label of each history item "
                         "(label_token, history_mix_prior: attention), which a "
                         "user vector does not carry; serve this user by id instead")
    if encoder is None:
        encoder = HistoryEncoder(config.encoder_name_or_path, cache_path=":memory:")
    want = (meta.get("encoder") or {}).get("identity")
    if want and want != encoder.identity:
        raise ValueError(f"{folder}: trained with encoder {want!r}, but the local encoder is {encoder.identity!r}")
    kept = list(items)[-config.max_history :]
    texts = [spec.history_text(it) for it in kept]  # ValueError naming the item and field on a bad item
    emb = encoder.encode(texts) if texts else torch.zeros(0, encoder.dim)
    return {
        "format": USER_VECTOR_FORMAT,
        "encoder": encoder.identity,
        "task": spec.name,
        "dim": int(encoder.dim),
        "embeddings": [[round(float(x), 6) for x in row] for row in emb.tolist()],
        "persona": None,
        **({"stats": [round(x, 6) for x in spec.history_stats(kept)]} if config.reads_history_stats else {}),
    }


def parse_user_vector(doc: Any, encoder_identity: str, dim: int, task: str, max_rows: int,
                      stats_dim: int | None = None) -> tuple[torch.Tensor, list[float] | None]:
    """Validate a user vector document on the server; returns its (N, dim) float32 embeddings and its history
    statistics (`stats_dim` numbers; None when the served checkpoint reads none, `stats_dim=None`).

    Raises:
        ValueError: one line naming the field (wrong format, encoder, task, shape, non-finite values, too many rows).
    """
    if not isinstance(doc, dict):
        raise ValueError("user_vector: expected a JSON object")
    if doc.get("format", USER_VECTOR_FORMAT) != USER_VECTOR_FORMAT:
        raise ValueError(f"user_vector.format: {doc.get('format')!r}, expected {USER_VECTOR_FORMAT!r}")
    if doc.get("encoder") != encoder_identity:
        raise ValueError(f"user_vector.encoder: {doc.get('encoder')!r}, but this server's encoder is {encoder_identity!r}")
    if doc.get("task", task) != task:
        raise ValueError(f"user_vector.task: {doc.get('task')!r}, but this server serves {task}")
    rows = doc.get("embeddings")
    if not isinstance(rows, list):
        raise ValueError("user_vector.embeddings: expected a list of rows")
    if len(rows) > max_rows:
        raise ValueError(f"user_vector.embeddings: {len(rows)} rows, at most {max_rows} (the checkpoint's max_history)")
    for i, r in enumerate(rows):
        if not isinstance(r, list) or len(r) != dim:
            raise ValueError(f"user_vector.embeddings[{i}]: expected {dim} numbers")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r):
            raise ValueError(f"user_vector.embeddings[{i}]: every value must be a finite number")
    persona = doc.get("persona")
    if persona is not None and not isinstance(persona, str):
        raise ValueError("user_vector.persona: expected a string or null")
    stats = None
    if stats_dim is not None:
        stats = doc.get("stats")
        if not (isinstance(stats, list) and len(stats) == stats_dim and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in stats)):
            raise ValueError(f"user_vector.stats: this checkpoint reads the history statistics; expected {stats_dim} "
                             "finite numbers (`pplug embed-user` writes them)")
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), dim), stats


__all__ = ["USER_VECTOR_FORMAT", "embed_user", "parse_user_vector"]
