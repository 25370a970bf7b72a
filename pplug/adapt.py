"""Life-long adaptation: fast (new history, no training) and slow (periodic retraining with a safety net).

Fast adaptation (`add_history`), on every new interaction:
    append to the store -> embed once (cached; also the persona's long-term memory) -> recompute the
    derived persona fields (new persona version + JSON diff). The next request already sees the new
    history: PPlug reads all of it, so the user embedding -- and the output -- change with no training.
    Optionally, every `propose_every` interactions a pluggable proposer (e.g. an LLM, AI Persona's
    scheme) suggests persona edits, recorded as another version with its diff. `user_batch` builds the
    serving batch of a stored user (history, persona text, recalled items).

Slow adaptation (`adapt`), from cron, on a run folder (layout: `pplug.checkpoints`):

    lock -> nothing new since the last attempt? no-op -> examples from interactions newer than the serving
    version's watermark -> hold out the most recent slice -> score the serving model on it -> continue
    training it through the training stack (`PPlugLitModule(init_from=serving version)` + a
    `LaMPDataModule` over the examples in memory: the optimizer groups, warmup/decay schedule and history
    dropout of train.py) -> score again -> not worse? save into .tmp-vNNNN, rename to vNNNN, replace LATEST.

A run killed at any point leaves LATEST naming the last good version; leftover temp folders are removed
by the next run.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import (REPORT_FILE, next_version, now, read_report, read_state, run_lock,
                          serving_version, set_latest, write_state)
from .io import atomic_write_json
from .persona import Persona, PersonaError, apply_updates, derive_from_history, diff, render
from .store import UserStore

GENERATE_PERSONA_CHARS = 400
"""Bound on the persona text put in front of prompts by `user_batch` (about 100 LLM tokens)."""

PersonaProposer = Callable[[Persona, list[dict], Any], dict | None]
"""(current persona, recent items, TaskSpec) -> partial persona dict of edits, or None for no change."""


class AdaptError(ValueError):
    """A one-line user-facing adaptation error."""


# --- fast adaptation -----------------------------------------------------------------------------


@dataclass
class AddHistoryResult:
    """What `add_history` did."""

    ids: list[int]
    """Store ids of the appended interactions."""
    persona_version: int
    """Persona version after the update (unchanged when nothing derived changed)."""
    diff: list[dict]
    """JSON diff of the derived-field update ([] if none)."""
    proposed: list[dict] = field(default_factory=list)
    """JSON diff of the proposer's edits ([] if it did not run or changed nothing)."""


def add_history(
    store: UserStore,
    user_id: str,
    items: Sequence[dict],
    encoder: Any,
    task: str | None = None,
    proposer: PersonaProposer | None = None,
    propose_every: int = 20,
) -> AddHistoryResult:
    """Fast adaptation: append interactions, cache their embeddings, refresh derived persona fields.

    Args:
        store: the user store.
        user_id: an existing user.
        items: new LaMP profile items of `task`, oldest first.
        encoder: a `pplug.history.HistoryEncoder` (use the model's encoder so serving hits the cache).
        task: the items' task (default: the user's task, given at create).
        proposer: optional persona editor called every `propose_every` interactions (default off).
        propose_every: k of "every k interactions".

    Returns:
        AddHistoryResult with the new ids, persona version and diffs.
    """
    from .tasks import get_task

    task = task or store.user_task(user_id)
    if task is None:
        raise AdaptError(f"user {user_id!r} has no task: pass task= (CLI --task)")
    spec = get_task(task)
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise AdaptError(f"history item {i}: expected a JSON object, got {type(it).__name__}")
    items = [dict(it) for it in items]
    texts = [spec.history_text(it) for it in items]  # ValueError naming the item and field on a bad item
    before = store.count_interactions(user_id, task=spec.name)
    emb = encoder.encode(texts) if items else None  # (N, dim): cached now, so serving never waits on it
    ids = store.add_interactions(user_id, items, task=spec.name, embeddings=emb, encoder=encoder.identity)
    history = store.history_items(user_id, task=spec.name)
    old = store.persona(user_id)
    new = apply_updates(old, derive_from_history(history, spec), source=f"derived persona of {user_id}")
    version = store.update_persona(user_id, new, source="derived", message=f"+{len(items)} {spec.name} interactions")
    ops = diff(old.to_dict(), new.to_dict())
    proposed: list[dict] = []
    after = before + len(items)
    if proposer is not None and propose_every > 0 and after // propose_every > before // propose_every:
        current = store.persona(user_id)
        edits = proposer(current, history[-propose_every:], spec)
        if edits:
            try:
                edited = apply_updates(current, edits, source=f"proposer edits for {user_id}")
            except PersonaError as e:
                print(f"pplug: persona proposer output ignored: {e}", file=sys.stderr)
            else:
                proposed = diff(current.to_dict(), edited.to_dict())
                version = store.update_persona(user_id, edited, source="proposer", message="proposed edits")
    return AddHistoryResult(ids=ids, persona_version=version, diff=ops, proposed=proposed)


_PROPOSER_PROMPT = """You maintain a short profile of a user. Current profile:
{persona}
Their latest items:
{items}
Update the profile. Answer with lines "field: value1, value2" using only these fields: {fields}.
"""


def llm_proposer(
    generate: Callable[[str], str],
    fields: Sequence[str] = ("personality.interests", "preference.styles", "pattern.behaviour"),
    max_items: int = 10,
) -> PersonaProposer:
    """A proposer that asks an LLM for persona edits (AI Persona's "update every k interactions").

    Args:
        generate: prompt -> completion (any LLM; e.g. `lambda p: model.llm.generate_text(p)`).
        fields: the list-valued persona fields the LLM may edit ("section.key").
        max_items: recent items shown to the LLM.

    Returns:
        A `PersonaProposer`; lines that do not parse or name other fields are ignored.
    """
    allowed = list(fields)

    def propose(persona: Persona, items: list[dict], task: Any) -> dict | None:
        shown = "\n".join(f"- {task.history_text(it)[:200]}" for it in items[-max_items:])
        reply = generate(_PROPOSER_PROMPT.format(persona=render(persona), items=shown, fields=", ".join(allowed)))
        edits: dict[str, Any] = {}
        for line in reply.splitlines():
            key, sep, value = line.strip().lstrip("-* ").partition(":")
            if not sep or key.strip() not in allowed:
                continue
            values = [v.strip() for v in value.split(",") if v.strip()]
            if values:
                section, sub = key.strip().split(".", 1)
                edits.setdefault(section, {})[sub] = values[:8]
        return edits or None

    return propose


def item_example(task: Any, item: dict, profile: list[dict], example_id: str, user_id: str | None = None):
    """A LaMP `Example` from one interaction: the question it answers, its output as the gold.

    E.g. a LaMP_3 item {"text": t, "score": "4"} becomes input "What is the score ... review: t", output "4".
    """
    from .data import Example

    if not task.input_field or not task.output_field:
        raise AdaptError(f"task {task.name}: history items carry no (input, output) pair, so it cannot be "
                         "retrained from interactions")
    missing = [f for f in (task.input_field, task.output_field) if f not in item]
    if missing:
        raise AdaptError(f"interaction {example_id}: field '{missing[0]}': missing (needed to retrain {task.name})")
    return Example(
        id=example_id,
        input=task.make_input(str(item[task.input_field])),
        profile=list(profile),
        output=str(item[task.output_field]),
        user_id=user_id,
    )


def user_batch(
    store: UserStore,
    user_id: str,
    inputs: Sequence[str],
    task: Any,
    method: str = "pplug",
    causal: bool = True,
    max_history: int | None = None,
    persona_fields: Sequence[str] | str | None = None,
    use_persona: bool = True,
    retrieval_k: int | None = None,
    retriever: str = "bm25",
    encoder: Any = None,
    budget: Any = None,
):
    """A `PPlugBatch` for one stored user: the store's history feeds the user embedding, the rendered
    persona goes in front of the prompt, and retrieval methods recall from the user's long-term memory.

    Args:
        store, user_id: where the user lives.
        inputs: LaMP-style inputs (instruction + content).
        task: TaskSpec or name.
        method: a `pplug.baselines` method ("pplug", "pplug+retrieval", ...).
        causal: decoder-only LLM (adds the answer cue).
        max_history: most recent items feeding the embedding.
        persona_fields: persona fields to render (None = `pplug.persona.DEFAULT_FIELDS`).
        use_persona: False leaves the persona text out.
        retrieval_k: items put into the prompt for retrieval methods (None = the method's default).
        retriever: "bm25" over the history, or "embedding": recall from the user's long-term memory
            (the store's faiss index; needs `encoder`).
        encoder: a HistoryEncoder (the model's), for embedding recall.
        budget: the LLM's `PromptBudget` (recalled items are fitted to the prompt limit); None: no fitting.
    """
    from .baselines import build_batch, get_method, resolve_k
    from .data import Example
    from .tasks import get_task

    spec = get_task(task)
    items = store.history_items(user_id, task=spec.name)
    persona_text = render(store.persona(user_id), persona_fields, max_chars=GENERATE_PERSONA_CHARS) if use_persona else None
    examples = [Example(id=str(i), input=x, profile=items, user_id=user_id) for i, x in enumerate(inputs)]
    retrieved = None
    k = resolve_k(get_method(method), retrieval_k)
    if k and retriever == "embedding":
        if encoder is None:
            raise AdaptError(f"method {method!r} recalls history items: pass a history encoder")
        retrieved = [[r.item for r, _ in store.recall(user_id, spec.query_text(x), k, encoder)] for x in inputs]
    return build_batch(
        spec, examples, method, causal=causal, max_history=max_history, retrieved=retrieved, retrieval_k=k or None,
        retriever=retriever, encoder=encoder, personas=[persona_text] * len(examples), with_targets=False,
        budget=budget,
    )


# --- slow adaptation -----------------------------------------------------------------------------


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
    store: UserStore,
    checkpoint_root: str | Path,
    min_new: int = 32,
    epochs: int = 2,
    lr: float = 1e-3,
    encoder_lr: float | None = 1e-4,
    weight_decay: float = 1e-4,
    warmup_ratio: float = 0.05,
    history_dropout: float = 0.0,
    batch_size: int = 8,
    val_fraction: float = 0.2,
    metric: str | None = None,
    seed: int = 0,
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
        epochs, lr, encoder_lr, weight_decay, warmup_ratio, history_dropout, batch_size: training, exactly as
            train.py's `PPlugLitModule` does it (AdamW with `encoder_lr` for the trainable input encoder,
            linear warmup then decay, PPlug's history dropout).
        val_fraction: share of the new interactions (the most recent ones) held out for validation.
        metric: the figure that decides promotion; default the task's main metric via
            `pplug.metrics.score` with the checkpoint's decoding; "loss" uses the validation LM loss.
        seed: seeds shuffling, dropout draws and torch.
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

    from .metrics import METRIC_DIRECTIONS
    from .model import PPlugModel
    from .runtime import resolve_device
    from .tasks import get_task
    from .train_module import LaMPDataModule, LogProgress, PPlugLitModule

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
        L.seed_everything(seed, verbose=False)
        lit = PPlugLitModule(init_from=str(parent_dir), lr=lr, encoder_lr=encoder_lr, weight_decay=weight_decay,
                             warmup_ratio=warmup_ratio, history_dropout=history_dropout,
                             embedding_cache=embedding_cache, write_final=False, **config.to_dict())
        model = lit.model
        dev = resolve_device(device)
        model.to(dev)
        metric = metric or spec.main_metric
        higher = METRIC_DIRECTIONS.get(metric, True) if metric != "loss" else False

        def validate() -> dict[str, float]:
            model.eval()
            if evaluate_fn is not None:
                return dict(evaluate_fn(model, val_ex))
            return _validate(model, spec, val_ex, metric, batch_size, [persona_text[e.id] for e in val_ex])

        say(f"{len(examples)} new interactions from {len({e.user_id for e in examples})} users: "
            f"train {len(train_ex)}, validate {len(val_ex)} ({metric})")
        before = validate()
        if metric not in before:
            raise AdaptError(f"validation returned {sorted(before)}, without the deciding metric {metric!r}")

        dm = LaMPDataModule.from_examples(spec, train_ex, val_ex, persona_text=persona_text, batch_size=batch_size,
                                          method=config.method, retrieval_k=config.retrieval_k,
                                          retriever=config.retriever, max_history=config.max_history, seed=seed)
        tty = sys.stderr.isatty()
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu" if dev.type == "cpu" else "auto", devices=1,
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
        say(f"trained {epochs} epoch(s), {trainer.global_step} steps in {time.monotonic() - t0:.1f} s"
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
            "train": {"epochs": epochs, "steps": int(trainer.global_step), "lr": lr, "encoder_lr": encoder_lr,
                      "weight_decay": weight_decay, "warmup_ratio": warmup_ratio, "history_dropout": history_dropout,
                      "batch_size": batch_size, "seed": seed, "loss": losses,
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
        state["last_attempt_watermark"] = last_seen
        state.setdefault("attempts", []).append({k: report[k] for k in ("created_at", "parent", "metric",
                                                                         "validation", "promoted", "watermark",
                                                                         "n_interactions")}
                                                | {"version": report["version"] if not_worse else None})
        write_state(root, state)
        return AdaptResult(status, msg, name, report)


def _validate(model: Any, task: Any, examples: list, metric: str, batch_size: int,
              personas: list[str | None]) -> dict[str, float]:
    """The deciding figures on held-out interactions: the LM loss, or `pplug.metrics.score` of the predictions
    `pplug.inference.predict` makes with the checkpoint's own method and decoding (what serving does)."""
    import torch

    from .baselines import build_batch
    from .inference import predict
    from .metrics import score

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


__all__ = ["AdaptError", "AdaptResult", "AddHistoryResult", "GENERATE_PERSONA_CHARS", "PersonaProposer", "adapt",
           "add_history", "item_example", "llm_proposer", "user_batch"]
