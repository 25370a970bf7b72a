"""The `pplug hub` verbs: `train`, `retrieve`, `retrain` (the `--hub DIR` option of other verbs is in
`pplug.cli.hub_option`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pplug.cli.commands import CLIError, ModelPlacement

# --- pplug hub train / retrieve / retrain ---


def hub_train(*, data: str, out: str, k: int = 8, split: str = "train", task: str | None = None,
              group_by: Literal["persona", "history"] = "persona", base_model: str = "default",
              encoder: str = "default", embedding_cache: str | None = None, r: int = 8, lora_alpha: int = 16,
              top_k: int = 2, retrieval_temperature: float = 0.1, combination: Literal["cat", "linear"] = "cat",
              epochs: int = 1, max_steps: int | None = None, batch_size: int = 8, lr: float = 2e-4,
              max_examples: int | None = None, max_input_tokens: int = 256, seed: int = 0,
              overwrite: bool = False, placement: ModelPlacement = ModelPlacement()) -> None:
    """group the users of a LaMP split (KMeans) and train one LoRA per group

    Args:
        data: folder with {split}_questions.json / {split}_outputs.json
        out: the hub folder to write (hub.json + adapters/<name>/)
        k: user groups, one adapter each, besides the general one (default: 8)
        split: the split to train on (default: train)
        task: task (default: the data's)
        group_by: cluster persona-text embeddings (default) or mean history embeddings
        base_model: the frozen LLM (default: SmolLM2-135M-Instruct)
        encoder: sentence encoder of personas and descriptions
        embedding_cache: embedding cache file (default: the shared pplug cache)
        r: LoRA rank (default: 8)
        lora_alpha: LoRA alpha (default: 16)
        top_k: adapters retrieved per user (default: 2)
        retrieval_temperature: softmax temperature over the top-k cosine similarities (default: 0.1)
        combination: how retrieved adapters merge (peft add_weighted_adapter; default: cat)
        epochs: passes over each group's examples (default: 1)
        max_steps: optimizer steps per adapter at most
        batch_size: examples per optimizer step (default: 8)
        lr: peak learning rate of the LoRA weights (default: 2e-4)
        max_examples: seeded random subset of the split
        max_input_tokens: prompt tokens kept per row (default: 256)
        seed: seed of the subset, the grouping and training (default: 0)
        overwrite: replace a hub already at --out
    """
    from pplug.encode.history import HistoryEncoder
    from pplug.hub.config import HUB_CONFIG_NAME, LoRAHubConfig
    from pplug.hub.train import HubTrainConfig, train_hub
    from pplug.lamp.data import load_split, subsample
    from pplug.modeling.llm import FrozenLLM

    folder = Path(out)
    if (folder / HUB_CONFIG_NAME).exists() and not overwrite:
        raise CLIError(f"{folder}: a hub is already there (pass --overwrite to replace it)")
    lamp_split = load_split(data, split, task)
    examples = subsample(lamp_split.examples, max_examples, seed)
    hub_config = LoRAHubConfig(task=lamp_split.task.name, base_model_name_or_path=base_model,
                               encoder_name_or_path=encoder, r=r, lora_alpha=lora_alpha, top_k=top_k,
                               temperature=retrieval_temperature, combination_type=combination)
    train_config = HubTrainConfig(num_adapters=k, group_by=group_by, epochs=epochs, max_steps=max_steps,
                                  batch_size=batch_size, lr=lr, seed=seed)
    llm = FrozenLLM(base_model, dtype=placement.dtype or "auto", device=placement.device,
                    max_input_tokens=max_input_tokens)
    history_encoder = HistoryEncoder(encoder, cache_path=embedding_cache, device=placement.device)
    hub, record = train_hub(llm, history_encoder, examples, hub_config, train_config)
    hub.save_pretrained(folder, training=record)
    print(f"wrote {folder}: {len(hub.names)} group adapters + {hub.adapter_names[0]} on {len(examples)} "
          f"{lamp_split.task.name} examples of {record['users']} users")
    for name in hub.names:
        print(f"  {name} ({record['adapters'][name]['users']} users): {hub.descriptions[name][:100]}")


def hub_retrieve(*, hub: str, history: str, embedding_cache: str | None = None) -> None:
    """the adapters a user's history retrieves (through its persona text)

    Args:
        hub: a hub folder written by `pplug hub train`
        history: JSON list of profile items, JSON lines, or - for stdin
        embedding_cache: embedding cache file (default: the shared pplug cache)
    """
    from pplug.hub.retrieval import retrieve_from_folder
    from pplug.lamp.data import read_items

    (persona,), (got,) = retrieve_from_folder(hub, [read_items(history)], cache_path=embedding_cache)
    if got.cold_start:
        print("no history: cold start, the general adapter")
        return
    print(f"persona: {persona}")
    print("retrieved: " + ", ".join(f"{n} {w:.2f} (cosine {c:.3f})"
                                    for n, w, c in zip(got.adapters, got.weights, got.scores)))


def hub_retrain(*, hub: str, store: str | None = None, rollback: bool = False, min_new: int = 32,
                val_fraction: float = 0.2, metric: str | None = None, epochs: int = 1, max_steps: int | None = None,
                batch_size: int = 8, lr: float = 2e-4, seed: int = 0, base_model: str | None = None,
                embedding_cache: str | None = None, placement: ModelPlacement = ModelPlacement()) -> None:
    """retrain the serving hub's adapters on new interactions; promote if not worse (cron-safe); --rollback

    Args:
        hub: hub run folder (or hub folder): versions go beside its serving one
        store: user store: SQLite file or postgresql:// URL (default: as for `pplug user`)
        rollback: serve the current hub version's parent again
        min_new: new interactions needed to retrain (default: 32)
        val_fraction: most recent share held out (default: 0.2)
        metric: deciding figure (default: the task's main metric)
        epochs: passes over each adapter's examples (default: 1)
        max_steps: optimizer steps per adapter at most
        batch_size: examples per optimizer step (default: 8)
        lr: peak learning rate of the LoRA weights (default: 2e-4)
        seed: training seed (default: 0)
        base_model: the frozen LLM (default: the hub's)
        embedding_cache: embedding cache file (default: the shared pplug cache)
    """
    from pplug.core.checkpoints import serving_version
    from pplug.hub.adapt import retrain_hub, rollback_hub
    from pplug.hub.config import HUB_CONFIG_NAME
    from pplug.hub.train import HubTrainConfig
    from pplug.store import open_store

    if rollback:
        before = serving_version(hub, HUB_CONFIG_NAME)
        now = rollback_hub(hub)
        print(f"rolled back hub {hub}: serving {now} (was {before})")
        return
    train_config = HubTrainConfig(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed)
    with open_store(store, create=False) as user_store:
        result = retrain_hub(user_store, hub, min_new=min_new, val_fraction=val_fraction, train_config=train_config,
                             metric=metric, base_model=base_model, device=placement.device,
                             dtype=placement.dtype or "auto", embedding_cache=embedding_cache,
                             log=lambda message: print(f"pplug hub retrain: {message}", file=sys.stderr))
    print(result.message)


__all__ = ["hub_retrain", "hub_retrieve", "hub_train"]
