"""Life-long adaptation: fast (new history, no training) and slow (periodic retraining with a safety net).

Fast adaptation (`add_history`, `user_batch`; in `pplug.adapt.fast`, importable from here): new
interactions go to the store, the derived persona fields follow, and the next request reads the new
history with no training.

Slow adaptation (`adapt`), from cron, on a run folder (layout: `pplug.core.checkpoints`):

    lock -> nothing new since the last attempt? no-op -> examples from interactions newer than the serving
    version's watermark -> hold out the most recent slice -> score the serving model on it -> continue
    training it through the training stack (`PPlugLitModule(init_from=serving version)` + a
    `LaMPDataModule` over the examples in memory, with one `TrainConfig`: the optimizer groups, warmup/decay
    schedule and history dropout of train.py) -> score again -> not worse? save into .tmp-vNNNN, rename to vNNNN,
    replace LATEST.

A run killed at any point leaves LATEST naming the last good version; leftover temp folders are removed
by the next run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pplug.core.checkpoints import (
    REPORT_FILE,
    next_version,
    now,
    read_report,
    read_state,
    record_attempt,
    run_lock,
    serving_version,
    set_latest,
)
from pplug.core.io import atomic_write_json
from pplug.persona.render import render
from pplug.store.base import UserStoreBase
from pplug.train.config import TrainConfig

from .fast import (
    GENERATE_PERSONA_CHARS,
    AdaptError,
    AddHistoryResult,
    PersonaProposer,
    add_history,
    item_example,
    llm_proposer,
    user_batch,
)

ADAPT_TRAINING = TrainConfig(epochs=2)
"""Slow adaptation's training: PPlug's optimisation, two passes over the new interactions."""


@dataclass
class AdaptResult:
    """Outcome of one `adapt` call."""

    status: str
    """"noop", "promoted" or "refused"."""
    message: str
    """One line for humans / cron logs."""
    version: str | None = None
    """The version serving after the call."""
    report: dict | None = None
    """The full report (validation figures, counts) when training ran."""


def adapt(
    store: UserStoreBase,
    checkpoint_root: str | Path,
    min_new: int = 32,
    training: TrainConfig = ADAPT_TRAINING,
    val_fraction: float = 0.2,
    metric: str | None = None,
    persona_fields: Sequence[str] | None = None,
    use_persona: bool = True,
    evaluate_fn: Callable[[Any, list[Any]], dict[str, float]] | None = None,
    embedding_cache: str | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> AdaptResult:
    """Slow adaptation: retrain the serving checkpoint on new interactions, promote it if not worse.

    Args:
        store: the user store (all users' interactions of the checkpoint's task are used).
        checkpoint_root: the run folder (`checkpoints/<run>/`) holding final/, vNNNN/ and LATEST.
        min_new: do nothing until at least this many interactions arrived since the serving version.
        training: how the serving checkpoint trains on, exactly as train.py's `PPlugLitModule` does it (AdamW
            with `encoder_lr` for the trainable input encoder, linear warmup then decay, PPlug's history dropout);
            its epochs, max_steps, max_grad_norm, batch_size and seed (shuffling, dropout draws, torch) set the
            Trainer and the data module.
        val_fraction: share of the new interactions (the most recent ones) held out for validation.
        metric: the figure that decides promotion; default the task's main metric via
            `pplug.lamp.metrics.score` with the checkpoint's decoding; "loss" uses the validation LM loss.
        persona_fields, use_persona: the persona text in the prompts (as `user generate` serves it).
        evaluate_fn: custom validation, (model, examples) -> {metric: value}; overrides `metric`'s scorer.
        embedding_cache: history-embedding cache file (None: the shared pplug cache).
        device: "auto" (cuda, then mps, then cpu) or a device name, for training and validation.
        log: progress callback (default: print to stderr).

    Returns:
        AdaptResult ("noop" | "promoted" | "refused") with a one-line message and the report.

    Raises:
        RunBusyError: another run holds the lock.
        AdaptError: bad settings, or interactions that cannot become training examples.
    """
    import lightning as L

    from pplug.core.runtime import resolve_device
    from pplug.core.tasks import get_task
    from pplug.lamp.metrics import METRIC_DIRECTIONS
    from pplug.modeling.model import PPlugModel
    from pplug.train.callbacks import LogProgress
    from pplug.train.data import LaMPDataModule
    from pplug.train.module import PPlugLitModule

    say = log or (lambda m: print(f"pplug adapt: {m}", file=sys.stderr))
    root = Path(checkpoint_root)
    if min_new < 2:
        raise AdaptError(f"min_new must be >= 2 (one interaction to train on, one to validate), got {min_new}")
    if not 0 < val_fraction < 1:
        raise AdaptError(f"val_fraction must be in (0, 1), got {val_fraction}")
    with run_lock(root):
        for tmp in root.glob(".tmp-v*"):  # left by a run that was killed: never served, safe to drop
            shutil.rmtree(tmp, ignore_errors=True)
        parent = serving_version(root)
        parent_dir = root / parent
        watermark = int((read_report(root, parent) or {}).get("watermark", 0))
        state = read_state(root)
        config, _ = PPlugModel.load_checkpoint_config(parent_dir)  # task and limits, without loading weights
        spec = get_task(config.task)
        new = store.interactions_since(watermark, task=spec.name)
        last_seen = max([r.id for r in new], default=watermark)
        attempted = int(state.get("last_attempt_watermark", 0))
        if len(new) < min_new:
            msg = f"nothing to do: {len(new)} new {spec.name} interactions since {parent} (< min_new={min_new}); serving {parent}"
            return AdaptResult("noop", msg, parent)
        if last_seen <= attempted:
            msg = f"nothing new since the last attempt (interaction id {attempted}); serving {parent}"
            return AdaptResult("noop", msg, parent)

        # Examples: each new interaction answers its own question, with all earlier history as profile.
        histories: dict[str, list[dict]] = {}
        examples = []
        for r in store.interactions_since(0, task=spec.name):
            prof = histories.setdefault(r.user_id, [])
            if r.id > watermark:
                examples.append(item_example(spec, r.item, prof[-config.max_history :], str(r.id), r.user_id))
            prof.append(r.item)
        n_val = max(1, int(round(len(examples) * val_fraction)))
        train_ex, val_ex = examples[:-n_val], examples[-n_val:]  # time-based: validate on the most recent
        persona_of: dict[str, str | None] = {}
        for e in examples:
            if e.user_id not in persona_of:
                persona_of[e.user_id] = (render(store.persona(e.user_id), persona_fields,
                                                max_chars=GENERATE_PERSONA_CHARS) if use_persona else None)
        persona_text = {e.id: persona_of[e.user_id] for e in examples}

        say(f"loading {parent_dir}")
        L.seed_everything(training.seed, verbose=False)
        lit = PPlugLitModule.from_config(config, training, init_from=str(parent_dir), embedding_cache=embedding_cache,
                                         write_final=False)
        model = lit.model
        dev = resolve_device(device)
        model.to(dev)
        metric = metric or spec.main_metric
        higher = METRIC_DIRECTIONS.get(metric, True) if metric != "loss" else False

        def validate() -> dict[str, float]:
            model.eval()
            if evaluate_fn is not None:
                return dict(evaluate_fn(model, val_ex))
            return _validate(model, spec, val_ex, metric, training.batch_size, [persona_text[e.id] for e in val_ex])

        say(f"{len(examples)} new interactions from {len({e.user_id for e in examples})} users: "
            f"train {len(train_ex)}, validate {len(val_ex)} ({metric})")
        before = validate()
        if metric not in before:
            raise AdaptError(f"validation returned {sorted(before)}, without the deciding metric {metric!r}")

        dm = LaMPDataModule.from_examples(spec, train_ex, val_ex, persona_text=persona_text,
                                          batch_size=training.batch_size, method=config.method,
                                          retrieval_k=config.retrieval_k, retriever=config.retriever,
                                          max_history=config.max_history, seed=training.seed)
        tty = sys.stderr.isatty()
        trainer = L.Trainer(max_epochs=training.epochs, max_steps=training.max_steps or -1,
                            gradient_clip_val=training.max_grad_norm,
                            accelerator="cpu" if dev.type == "cpu" else "auto", devices=1,
                            logger=False, enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                            enable_model_summary=False, enable_progress_bar=tty,
                            callbacks=[] if tty else [LogProgress(every_n_steps=10)],
                            default_root_dir=str(root / f".tmp-train-{os.getpid()}"))
        t0 = time.monotonic()
        try:
            trainer.fit(lit, datamodule=dm)
        finally:
            shutil.rmtree(root / f".tmp-train-{os.getpid()}", ignore_errors=True)
        losses = [float(v) for k, v in trainer.callback_metrics.items() if k == "train/loss_epoch"]
        say(f"trained {training.epochs} epoch(s), {trainer.global_step} steps in {time.monotonic() - t0:.1f} s"
            + (f"; last epoch train loss {losses[-1]:.4f}" if losses else ""))
        after = validate()
        a, b = float(after[metric]), float(before[metric])
        not_worse = (a >= b if higher else a <= b) and a == a  # NaN counts as worse
        name = next_version(root)
        report = {
            "version": name,
            "parent": parent,
            "created_at": now(),
            "task": spec.name,
            "metric": metric,
            "higher_is_better": higher,
            "validation": {"parent": before, "candidate": after},
            "promoted": bool(not_worse),
            "n_interactions": len(examples),
            "n_train": len(train_ex),
            "n_val": len(val_ex),
            "n_users": len({e.user_id for e in examples}),
            "interaction_ids": [int(examples[0].id), int(examples[-1].id)],
            "watermark": last_seen,
            "method": config.method,
            "train": {**dataclasses.asdict(training), "steps": int(trainer.global_step), "loss": losses,
                      "seconds": round(time.monotonic() - t0, 1)},
            "persona_in_prompt": bool(use_persona),
        }
        figures = f"{metric} {b:.4f} -> {a:.4f} on {len(val_ex)} held-out interactions"
        if not_worse:
            tmp = root / f".tmp-{name}-{os.getpid()}"
            model.save_pretrained(tmp)
            atomic_write_json(tmp / REPORT_FILE, report)
            os.replace(tmp, root / name)  # the version appears complete or not at all
            set_latest(root, name)
            status, msg = "promoted", f"promoted {name} (parent {parent}): {figures}"
        else:
            status, msg = "refused", f"refused candidate (parent {parent} stays): {figures}"
            name = parent
        record_attempt(root, state, report, last_seen, kept=not_worse)
        return AdaptResult(status, msg, name, report)


def _validate(model: Any, task: Any, examples: list, metric: str, batch_size: int,
              personas: list[str | None]) -> dict[str, float]:
    """The deciding figures on held-out interactions: the LM loss, or `pplug.lamp.metrics.score` of the predictions
    `pplug.decode.inference.predict` makes with the checkpoint's own method and decoding (what serving does)."""
    import torch

    from pplug.decode.inference import predict
    from pplug.lamp.metrics import score
    from pplug.methods.batches import build_batch

    cfg = model.config
    if metric == "loss":
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(examples), batch_size):
                chunk = examples[i : i + batch_size]
                batch = build_batch(task, chunk, cfg.method, causal=not model.llm.is_seq2seq,
                                    max_history=cfg.max_history, retrieval_k=cfg.retrieval_k, retriever=cfg.retriever,
                                    encoder=model.history_encoder, personas=personas[i : i + batch_size],
                                    budget=model.llm.prompt_budget())
                total += float(model(batch)) * len(chunk)
        return {"loss": total / max(len(examples), 1)}
    preds = predict(model, task, examples, cfg.method, [cfg.decoding], batch_size=batch_size,
                    max_history=cfg.max_history, retrieval_k=cfg.retrieval_k, retriever=cfg.retriever,
                    encoder=model.history_encoder, personas=personas)[cfg.decoding]
    return score(task, preds, {e.id: e.output for e in examples})


__all__ = ["ADAPT_TRAINING", "AdaptError", "AdaptResult", "AddHistoryResult", "GENERATE_PERSONA_CHARS",
           "PersonaProposer", "adapt", "add_history", "item_example", "llm_proposer", "user_batch"]
