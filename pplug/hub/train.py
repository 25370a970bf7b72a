"""Training a LoRA hub (`pplug.hub.model`): users grouped by their persona text, one LoRA per group, a general one.

    train split --users--> persona text (pplug.persona.from_history) --HistoryEncoder--> e_u --KMeans(K)--> K groups
    group g's examples  --AdamW, linear warmup then decay, the FrozenLLM's target loss-->  adapter "group-0g"
    every example       --the same loop-->                                                  adapter "general"

A group's description is the persona text of its user closest to the centroid, so retrieval compares a user's
persona text with a real one of the group. Prompts are the `none` method's (the input alone): the adapter is
what personalizes. The batches are built by the training data module's `Collator`; the loop is plain PyTorch,
one adapter at a time (peft's `set_adapter` makes only that one trainable).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from pplug.train.config import TrainConfig

from .config import GENERAL, LoRAHubConfig
from .model import LoRAHub


@dataclass(frozen=True)
class HubTrainConfig(TrainConfig):
    """How a hub is trained (recorded in hub.json under `training`): `TrainConfig` with LoRA's defaults, each
    adapter on its own (epochs and max_steps count per adapter, seed also seeds the clustering), and how users
    are grouped. `encoder_lr` and `history_dropout` are PPlug's: an adapter has no input encoder and its prompts
    read no history."""

    lr: float = 2e-4
    """Peak AdamW learning rate of the LoRA weights."""
    encoder_lr: float | None = None
    """Unused: an adapter has no input encoder."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this (None: no clipping)."""
    num_adapters: int = 8
    """K: the number of user groups, one adapter each (besides the general adapter)."""
    group_by: Literal["persona", "history"] = "persona"
    """What is clustered: the embedding of each user's persona text, or the mean embedding of their history."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_adapters < 1:
            raise ValueError(f"num_adapters must be >= 1, got {self.num_adapters}")
        if self.group_by not in ("persona", "history"):
            raise ValueError(f"group_by must be 'persona' or 'history', got {self.group_by!r}")


def user_profiles(examples: Sequence[Any]) -> dict[str, list[dict]]:
    """user id -> the longest profile among that user's examples (LaMP gives each question the history before it)."""
    out: dict[str, list[dict]] = {}
    for ex in examples:
        user = ex.user_id if ex.user_id is not None else f"q:{ex.id}"
        if len(ex.profile) >= len(out.get(user, [])):
            out[user] = list(ex.profile)
    return out


def group_users(embeddings: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """KMeans over unit-norm user embeddings (N, D): (labels (N,), the index of each group's most central user (K,))."""
    from sklearn.cluster import KMeans

    if len(embeddings) < k:
        raise ValueError(f"{k} groups need at least {k} users with history; the data has {len(embeddings)}")
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(embeddings)
    centres = km.cluster_centers_ / np.maximum(np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True), 1e-12)
    sims = embeddings @ centres.T  # (N, K) cosine
    central = np.array([int(np.where(km.labels_ == g, sims[:, g], -np.inf).argmax()) for g in range(k)])
    return km.labels_, central


def user_embeddings(encoder: Any, task: Any, profiles: list[list[dict]], personas: list[str], group_by: str,
                    max_history: int | None) -> np.ndarray:
    """(N, D) unit-norm embedding of each user: their persona text, or the mean of their history items."""
    if group_by == "persona":
        return encoder.encode(personas).float().numpy()
    rows = []
    for prof in profiles:
        items = prof[-max_history:] if max_history else prof
        mean = encoder.encode([task.history_text(it) for it in items]).float().mean(0)
        rows.append(torch.nn.functional.normalize(mean, dim=-1))
    return torch.stack(rows).numpy()


def fit_adapter(hub: LoRAHub, name: str, examples: Sequence[Any], config: HubTrainConfig,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train adapter `name` on `examples` (the others stay frozen). Returns steps, first and last losses."""
    from transformers import get_linear_schedule_with_warmup

    from pplug.core.tasks import get_task
    from pplug.train.data import Collator

    llm, task = hub.llm, get_task(hub.config.task)
    collate = Collator(task, "none", not llm.is_seq2seq, hub.config.max_history, None, None, True,
                       budget=llm.prompt_budget())
    rows = [ex for ex in examples if ex.output is not None]
    per_epoch = math.ceil(len(rows) / config.batch_size)
    total = min(per_epoch * config.epochs, config.max_steps or per_epoch * config.epochs)
    if total == 0:
        return {"steps": 0, "examples": 0}
    hub.peft.set_adapter(name)  # peft: the active adapter's weights train, the others' do not
    params = [p for p in llm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps(total), total)
    rng = random.Random(f"{config.seed}:{name}")
    losses: list[float] = []
    t0, step = time.monotonic(), 0
    try:
        while step < total:
            order = rows[:]
            rng.shuffle(order)
            for i in range(0, len(order), config.batch_size):
                batch = collate(order[i:i + config.batch_size]).batch
                loss = llm(None, batch.prompts, batch.targets)
                loss.backward()
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                step += 1
                if step >= total:
                    break
    finally:
        hub.peft.set_adapter(GENERAL)
        hub.freeze()
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]
    record = {"steps": step, "examples": len(rows), "first_loss": round(sum(head) / len(head), 4),
              "last_loss": round(sum(tail) / len(tail), 4), "seconds": round(time.monotonic() - t0, 1)}
    log(f"{name}: {len(rows)} examples, {step} steps in {record['seconds']} s; "
        f"train loss {record['first_loss']:.4f} -> {record['last_loss']:.4f}")
    return record


def train_hub(llm: Any, encoder: Any, examples: Sequence[Any], hub_config: LoRAHubConfig,
              config: HubTrainConfig, log: Callable[[str], None] = print) -> tuple[LoRAHub, dict[str, Any]]:
    """Group the users of `examples`, train one adapter per group and the general adapter on all of them.

    Returns the hub and the training record (`save_pretrained(..., training=record)` keeps it in hub.json):
    the config, and per adapter its users, examples, steps and losses.
    """
    from pplug.core.tasks import get_task

    task = get_task(hub_config.task)
    profiles = user_profiles(examples)
    warm = [u for u, p in profiles.items() if p]
    personas = [hub_config.persona_text(profiles[u]) for u in warm]
    emb = user_embeddings(encoder, task, [profiles[u] for u in warm], personas, config.group_by,
                          hub_config.max_history)
    labels, central = group_users(emb, config.num_adapters, config.seed)
    names = [f"group-{g:02d}" for g in range(config.num_adapters)]
    group_of = {u: names[int(g)] for u, g in zip(warm, labels)}
    torch.manual_seed(config.seed)  # peft draws each adapter's A at random
    hub = LoRAHub(llm, hub_config, {names[g]: personas[int(central[g])] for g in range(config.num_adapters)},
                  encoder, general_description="every user (cold start)")
    log(f"{len(profiles)} users ({len(warm)} with history) in {config.num_adapters} groups by {config.group_by}: "
        + ", ".join(f"{n} {int((labels == g).sum())}" for g, n in enumerate(names)))
    record: dict[str, Any] = {"config": dataclasses.asdict(config), "users": len(profiles), "adapters": {}}

    def user(ex) -> str:
        return ex.user_id if ex.user_id is not None else f"q:{ex.id}"

    for name in names:
        group = [ex for ex in examples if group_of.get(user(ex)) == name]
        record["adapters"][name] = {"users": sum(1 for v in group_of.values() if v == name),
                                    **fit_adapter(hub, name, group, config, log)}
    record["adapters"][GENERAL] = {"users": len(profiles), **fit_adapter(hub, GENERAL, examples, config, log)}
    return hub, record


__all__ = ["HubTrainConfig", "fit_adapter", "group_users", "train_hub", "user_embeddings", "user_profiles"]
