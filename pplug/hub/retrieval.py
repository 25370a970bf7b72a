"""Which adapters a user's persona text retrieves: the ranking rule of the hub (`rank_adapters`), and retrieval
against a saved hub folder without loading its LLM (`retrieve_from_folder`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from pplug.encode.history import rank_descriptions

from .config import ADAPTERS_DIR, DESCRIPTIONS_NAME, GENERAL, HUB_CONFIG_NAME, HubError, LoRAHubConfig, Retrieval
from .files import check_encoder, read_descriptions, read_hub_json, resolve_hub


def rank_adapters(encoder: Any, names: Sequence[str], description_embeddings: torch.Tensor,
                  persona_texts: Sequence[str | None], top_k: int, temperature: float) -> list[Retrieval]:
    """Top-k of `names` per persona text (`pplug.encode.history.rank_descriptions`: cosine to the (K, D)
    description embeddings, softmax(scores / temperature) weights); an empty persona text gets the general
    adapter."""
    ranked = rank_descriptions(encoder, description_embeddings, persona_texts, top_k, temperature)
    return [Retrieval([names[j] for j in r[0]], r[1], r[2]) if r is not None else Retrieval([GENERAL], [1.0])
            for r in ranked]


def retrieve_from_folder(hub_dir: str | os.PathLike, profiles: Sequence[Sequence[dict]], encoder: Any = None,
                         cache_path: Any = None) -> tuple[list[str], list[Retrieval]]:
    """(persona texts, retrievals) of users' histories against a saved hub, without loading its LLM."""
    from pplug.encode.history import HistoryEncoder

    hub_dir = resolve_hub(hub_dir)
    doc = read_hub_json(hub_dir)
    config: LoRAHubConfig = doc["config"]
    for name in [GENERAL, *(a["name"] for a in doc["adapters"])]:  # a retrieval must name adapters that exist
        if not (hub_dir / ADAPTERS_DIR / name).is_dir():
            raise HubError(f"{hub_dir / ADAPTERS_DIR / name}: adapter folder missing ({HUB_CONFIG_NAME} lists it)")
    encoder = encoder or HistoryEncoder(config.encoder_name_or_path, cache_path=cache_path, device="cpu")
    check_encoder(doc, encoder, hub_dir / HUB_CONFIG_NAME)
    names = [a["name"] for a in doc["adapters"]]
    emb = read_descriptions(hub_dir / DESCRIPTIONS_NAME, len(names), encoder.dim)
    texts = [config.persona_text(p) for p in profiles]
    return texts, rank_adapters(encoder, names, emb, texts, config.top_k, config.temperature)


__all__ = ["rank_adapters", "retrieve_from_folder"]
