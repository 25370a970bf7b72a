"""History-drop copies: each training question seen k times per step, each copy with its own random part of
the user's history left out (the official PPlug recipe, rucliujn/PPlug `aggr_id.py`).

    question (user with n > 2 history items) --copy 0: the whole history
                                             --copies 1..k-1: n - (int(n * U(0, 0.5)) + 1) items, order kept

The copies differ only in their history, so with `soft_prompt_position: after_prompt` they share the prompt's
prefill and the trainable input encoder's pass (`pplug.modeling.prefill`, `UserEmbedder.embed_query`): the k-1
extra copies cost a few soft vectors each, not a prompt. Users with at most 2 items get no copies (the
official rule). The draw depends on (seed, epoch, question id) only, so a run is reproducible and a batch does
not depend on its neighbours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from typing import Any


def copy_rng(seed: int, epoch: int, example_id: str) -> random.Random:
    """The generator of one question's copies in one epoch (stable across processes, unlike `hash`)."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{example_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def drop_history(profile: Sequence[dict], rng: random.Random) -> list[dict]:
    """`profile` with int(n * U(0, 0.5)) + 1 of its n items left out at random (order kept); n <= 2: as is."""
    n = len(profile)
    if n <= 2:
        return list(profile)
    drop = int(n * rng.uniform(0, 0.5)) + 1
    keep = sorted(rng.sample(range(n), n - drop))
    return [profile[i] for i in keep]


def history_copies(examples: Sequence[Any], copies: int, seed: int = 0, epoch: int = 0) -> list[Any]:
    """Each example followed by its `copies - 1` history-drop copies (fewer for short histories: none for
    n <= 2), copies next to their question. `copies=1`: the examples as they are."""
    if copies < 1:
        raise ValueError(f"history copies must be >= 1, got {copies}")
    out: list[Any] = []
    for ex in examples:
        out.append(ex)
        if copies == 1 or len(ex.profile) <= 2:
            continue
        rng = copy_rng(seed, epoch, ex.id)
        out.extend(dataclasses.replace(ex, profile=drop_history(ex.profile, rng)) for _ in range(copies - 1))
    return out


__all__ = ["copy_rng", "drop_history", "history_copies"]
