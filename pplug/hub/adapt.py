"""Slow adaptation of a LoRA hub: retrain its adapters on the interactions gathered while serving, versioned.

    lock -> nothing new since the last attempt? no-op -> examples from interactions newer than the serving
    version's watermark -> hold out the most recent slice -> score the serving hub on it (`lora-hub`) ->
    continue training its adapters: each on the rows whose user's persona text retrieves it first, the general
    one on every row -> score again -> not worse? save into .tmp-vNNNN, rename to vNNNN, replace LATEST.

The rule is `pplug adapt`'s for models (`pplug.adapt`, `pplug.core.checkpoints`): the serving version keeps serving
until a candidate is at least as good on the held-out slice; a worse one is not kept; `rollback` serves the
parent again. A hub run folder is laid out like a model run folder, with `hub.json` marking a version:

    hubs/<run>/final/ (or the hub folder itself)   v0001/ v0002/ ... (+ adapt_report.json)   LATEST
    adapt_state.json   .adapt.lock

Descriptions and groups stay as trained (`pplug hub train` regroups from scratch).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pplug.adapt.fast import AdaptError, item_example
from pplug.adapt.slow import AdaptResult
from pplug.core.checkpoints import (
    REPORT_FILE,
    next_version,
    now,
    read_report,
    read_state,
    record_attempt,
    rollback,
    run_lock,
    serving_version,
    set_latest,
)
from pplug.core.io import atomic_write_json

from .config import GENERAL, HUB_CONFIG_NAME

HubAdaptResult = AdaptResult
"""Outcome of one `retrain_hub` call: the same record as model adaptation's (status, message, version, report)."""


def retrain_hub(store: Any, hub_root: str | os.PathLike, min_new: int = 32, val_fraction: float = 0.2,
                train_config: Any = None, metric: str | None = None, base_model: str | None = None,
                device: str = "auto", dtype: str = "auto", embedding_cache: Any = None,
                evaluate_fn: Callable[[Any, list[Any]], dict[str, float]] | None = None,
                log: Callable[[str], None] = print) -> HubAdaptResult:
    """Continue training the serving hub's adapters on new interactions; promote the result if not worse.

    Args:
        store: the user store (all users' interactions of the hub's task).
        hub_root: a hub run folder or a hub folder (versions are written beside its serving version).
        min_new: do nothing until this many interactions arrived since the serving version.
        val_fraction: share of the new interactions (the most recent) held out for validation.
        train_config: a `HubTrainConfig` (epochs, steps, lr, batch size, seed); its num_adapters is unused.
        metric: the deciding figure (default: the task's main metric of the `lora-hub` predictions).
        base_model: the frozen LLM (default: the hub's); it must be the model the hub was made for.
        device, dtype, embedding_cache: where and how the LLM and encoder run.
        evaluate_fn: custom validation, (hub, examples) -> {metric: value}.
        log: progress lines.

    Raises:
        RunBusyError: another run holds the lock.  AdaptError: bad settings or unusable interactions.
    """
    from pplug.core.tasks import get_task
    from pplug.encode.history import HistoryEncoder
    from pplug.lamp.metrics import METRIC_DIRECTIONS
    from pplug.modeling.llm import FrozenLLM

    from .files import read_hub_json
    from .methods import load_hub
    from .train import HubTrainConfig, fit_adapter

    root = Path(hub_root)
    if min_new < 2:
        raise AdaptError(f"min_new must be >= 2 (one interaction to train on, one to validate), got {min_new}")
    if not 0 < val_fraction < 1:
        raise AdaptError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_config = train_config or HubTrainConfig()
    with run_lock(root):
        for tmp in root.glob(".tmp-v*"):  # left by a killed run: never served
            shutil.rmtree(tmp, ignore_errors=True)
        parent = serving_version(root, HUB_CONFIG_NAME)
        parent_dir = root / parent
        config = read_hub_json(parent_dir)["config"]
        spec = get_task(config.task)
        watermark = int((read_report(root, parent) or {}).get("watermark", 0))
        state = read_state(root)
        new = store.interactions_since(watermark, task=spec.name)
        last_seen = max([r.id for r in new], default=watermark)
        if len(new) < min_new:
            return HubAdaptResult("noop", f"nothing to do: {len(new)} new {spec.name} interactions since {parent} "
                                          f"(< min_new={min_new}); serving {parent}", parent)
        if last_seen <= int(state.get("last_attempt_watermark", 0)):
            return HubAdaptResult("noop", f"nothing new since the last attempt (interaction id "
                                          f"{state['last_attempt_watermark']}); serving {parent}", parent)
        histories: dict[str, list[dict]] = {}
        examples = []
        for r in store.interactions_since(0, task=spec.name):
            prof = histories.setdefault(r.user_id, [])
            if r.id > watermark:  # each new interaction answers its own question, earlier history as profile
                examples.append(item_example(spec, r.item, list(prof), str(r.id), r.user_id))
            prof.append(r.item)
        n_val = max(1, int(round(len(examples) * val_fraction)))
        train_ex, val_ex = examples[:-n_val], examples[-n_val:]

        log(f"loading {parent_dir}")
        llm = FrozenLLM(base_model or config.base_model_name_or_path, dtype=dtype, device=device)
        encoder = HistoryEncoder(config.encoder_name_or_path, cache_path=embedding_cache, device=llm.device)
        hub = load_hub(parent_dir, llm, encoder)
        metric = metric or spec.main_metric
        higher = METRIC_DIRECTIONS.get(metric, True)

        def validate() -> dict[str, float]:
            hub.forget_mixes()  # merged adapters were made from the weights before training
            return dict(evaluate_fn(hub, val_ex)) if evaluate_fn else _validate(hub, spec, val_ex, train_config)

        log(f"{len(examples)} new interactions from {len({e.user_id for e in examples})} users: "
            f"train {len(train_ex)}, validate {len(val_ex)} ({metric})")
        before = validate()
        if metric not in before:
            raise AdaptError(f"validation returned {sorted(before)}, without the deciding metric {metric!r}")
        t0 = time.monotonic()
        first = [r.adapters[0] for r in hub.retrieve_for_histories([e.profile for e in train_ex])]
        steps: dict[str, dict] = {}
        for name in hub.names:  # the rows this adapter serves (their best match); the general one: every row
            group = [e for e, a in zip(train_ex, first) if a == name]
            steps[name] = fit_adapter(hub, name, group, train_config, log)
        steps[GENERAL] = fit_adapter(hub, GENERAL, train_ex, train_config, log)
        after = validate()
        a, b = float(after[metric]), float(before[metric])
        not_worse = (a >= b if higher else a <= b) and a == a  # NaN counts as worse
        name = next_version(root)
        report = {"version": name, "parent": parent, "created_at": now(), "task": spec.name, "metric": metric,
                  "higher_is_better": higher, "validation": {"parent": before, "candidate": after},
                  "promoted": bool(not_worse), "n_interactions": len(examples), "n_train": len(train_ex),
                  "n_val": len(val_ex), "n_users": len({e.user_id for e in examples}), "watermark": last_seen,
                  "kind": "lora-hub", "train": {"adapters": steps, "seconds": round(time.monotonic() - t0, 1),
                                                "epochs": train_config.epochs, "lr": train_config.lr,
                                                "max_steps": train_config.max_steps, "seed": train_config.seed}}
        figures = f"{metric} {b:.4f} -> {a:.4f} on {len(val_ex)} held-out interactions"
        if not_worse:
            tmp = root / f".tmp-{name}-{os.getpid()}"
            hub.save_pretrained(tmp, training={"adapted_from": parent, **report["train"]})
            atomic_write_json(tmp / REPORT_FILE, report)
            os.replace(tmp, root / name)  # the version appears complete or not at all
            set_latest(root, name)
            status, msg = "promoted", f"promoted hub {name} (parent {parent}): {figures}"
        else:
            status, msg, name = "refused", f"refused hub candidate (parent {parent} stays): {figures}", parent
        record_attempt(root, state, report, last_seen, kept=not_worse)
        return HubAdaptResult(status, msg, name, report)


def rollback_hub(hub_root: str | os.PathLike) -> str:
    """Serve the serving hub version's parent again; returns the version now served."""
    return rollback(hub_root, marker=HUB_CONFIG_NAME)


def _validate(hub: Any, task: Any, examples: list, train_config: Any) -> dict[str, float]:
    """The task's metrics of the `lora-hub` predictions on held-out interactions (what serving does)."""
    from pplug.decode.inference import FrozenBaseline, predict
    from pplug.lamp.metrics import score

    decoding = task.decodings[0]
    preds = predict(FrozenBaseline(hub.llm), task, examples, "lora-hub", [decoding],
                    batch_size=train_config.batch_size, encoder=hub.encoder)[decoding]  # hub: in hub.llm.plugins
    return score(task, preds, {e.id: e.output for e in examples})


__all__ = ["HubAdaptResult", "retrain_hub", "rollback_hub"]
