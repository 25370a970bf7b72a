"""The life-long verbs of `pplug`: the users of a personalization store (`pplug user create`, `add-history`,
`show`, `list`, `generate`) and the model's slow adaptation to them (`pplug adapt`)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pplug.cli.commands import CLIError, ModelPlacement, load_model
from pplug.cli.hub_option import adapter_change_line, folder_retrieval, user_hub_rows

# --- pplug user ... ---


def user_create(user: str, *, persona: str | None = None, task: str = "LaMP_3", store: str | None = None) -> None:
    """add a user with a persona document (YAML or JSON)

    Args:
        user: user id: 1 to 128 letters, digits and . _ @ -
        persona: persona file (.yaml/.yml/.json); omitted: an empty persona
        task: task of the user's history (default: LaMP_3)
        store: user store: a SQLite file (or sqlite:///file) or a postgresql:// URL (default:
            $PPLUG_HOME/pplug_store.sqlite or ./pplug_store.sqlite)
    """
    from pplug.persona.render import render
    from pplug.persona.schema import Persona, load_persona
    from pplug.store import open_store
    from pplug.store.validation import check_user_id

    check_user_id(user)  # before any file or store is opened
    document = load_persona(persona) if persona else Persona()
    with open_store(store) as user_store:
        created = user_store.create_user(user, document, task=task)
        print(f"created user {user!r} in {user_store.location} (task {user_store.user_task(user) or '-'}), "
              "persona v1")
        if text := render(created):
            print(f"persona: {text}")


def user_add_history(user: str, file: str, *, task: str | None = None, encoder: str = "default",
                     embedding_cache: str | None = None, device: str = "auto", hub: str | None = None,
                     idempotency_key: str | None = None, store: str | None = None) -> None:
    """append interactions (LaMP profile items) and refresh the persona (one transaction)

    Args:
        user: user id
        file: JSON list of profile items, JSON lines, or - for stdin
        task: task of the items (default: the user's)
        encoder: history encoder (use the checkpoint's; default: default)
        embedding_cache: embedding cache file (default: the shared pplug cache)
        device: where the encoder runs: auto (default), cuda, mps, cpu
        hub: a LoRA hub: also print the adapters the user's persona retrieves, before -> after
        idempotency_key: a key of this upload (e.g. a UUID): run again with the same key (after a failure or
            a crash), nothing is stored twice
        store: user store: a SQLite file (or sqlite:///file) or a postgresql:// URL (default:
            $PPLUG_HOME/pplug_store.sqlite or ./pplug_store.sqlite)
    """
    from pplug.adapt.fast import add_history
    from pplug.encode.history import HistoryEncoder
    from pplug.lamp.data import read_items
    from pplug.store import open_store
    from pplug.store.validation import (
        MAX_HISTORY_FILE_BYTES,
        InvalidInputError,
        check_idempotency_key,
        check_items,
        check_user_id,
    )

    check_user_id(user)  # before any file or store is opened
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key, "--idempotency-key")
    with open_store(store, create=False) as user_store:
        items = read_items(file, max_bytes=MAX_HISTORY_FILE_BYTES)
        if not items:
            raise CLIError(f"{file}: no history items")
        task = task or user_store.user_task(user)  # unknown user -> error before loading the encoder
        if task is None:
            raise CLIError(f"user {user!r} has no task: pass --task")
        try:  # the whole file before the encoder loads or anything is written
            items = check_items(items, task)
        except InvalidInputError as e:
            raise CLIError(f"{file}: {e}") from None
        history_encoder = HistoryEncoder(encoder, cache_path=embedding_cache, device=device)
        if hub:  # the adapters the user's persona text retrieves before the new items
            before = folder_retrieval(hub, user_store.history_items(user, task=task), history_encoder)
        added = add_history(user_store, user, items, history_encoder, task=task, idempotency_key=idempotency_key)
        span = f" (ids {added.ids[0]}..{added.ids[-1]})" if added.ids else ""
        verb = "already added (idempotency key seen): nothing stored," if added.replayed else "added"
        print(f"{verb} {len(added.ids)} interactions to {user!r}{span}; "
              f"{user_store.count_interactions(user)} in total; persona v{added.persona_version}")
        if added.diff:
            print(f"persona change: {format_diff(added.diff)}")
        if hub:
            after = folder_retrieval(hub, user_store.history_items(user, task=task), history_encoder)
            print(adapter_change_line(before, after))


def user_show(user: str, *, diff_ops: int = 6, store: str | None = None) -> None:
    """persona, history count and persona change log

    Args:
        user: user id
        diff_ops: diff operations shown per change (default: 6)
        store: user store: a SQLite file (or sqlite:///file) or a postgresql:// URL (default:
            $PPLUG_HOME/pplug_store.sqlite or ./pplug_store.sqlite)
    """
    from pplug.persona.schema import dump_persona
    from pplug.store import open_store
    from pplug.store.validation import check_user_id

    check_user_id(user)  # before any file or store is opened
    with open_store(store, create=False) as user_store:
        task = user_store.user_task(user)  # unknown user -> error before printing anything
        print(f"# user {user} ({user_store.location})")
        print(f"task: {task or '-'}")
        counts = user_store.count_by_task(user)
        print("history: " + (", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "0") + " interactions")
        print(f"# persona v{user_store.persona_version(user)}")
        print(dump_persona(user_store.persona(user)).rstrip())
        print("# persona change log")
        for change in user_store.persona_log(user):
            note = f" ({change.message})" if change.message else ""
            print(f"v{change.version} {change.created_at[:19]} {change.source}{note}: "
                  f"{format_diff(change.diff, limit=diff_ops)}")


def user_list(*, store: str | None = None) -> None:
    """all users with their history counts

    Args:
        store: user store: a SQLite file (or sqlite:///file) or a postgresql:// URL (default:
            $PPLUG_HOME/pplug_store.sqlite or ./pplug_store.sqlite)
    """
    from pplug.store import open_store

    with open_store(store, create=False) as user_store:
        for user in user_store.users():
            print(f"{user}\t{user_store.count_interactions(user)} interactions\t"
                  f"persona v{user_store.persona_version(user)}")


def user_generate(user: str, *, checkpoint: str, input: str, persona_fields: str | None = None,
                  no_persona: bool = False, max_new_tokens: int | None = None,
                  decoding: Literal["argmax", "expected", "median"] | None = None, show_prompt: bool = False,
                  hub: str | None = None, placement: ModelPlacement = ModelPlacement(),
                  store: str | None = None) -> None:
    """personalized output for a user (store history + persona text)

    Args:
        user: user id
        checkpoint: a checkpoint folder or a run folder (serves its LATEST)
        input: the input (LaMP-style, or just the content: it is wrapped)
        persona_fields: comma-separated persona fields to render (default: all)
        no_persona: leave the persona text out of the prompt
        max_new_tokens: generation budget (default: the task's)
        decoding: ratings: argmax / expected / median (default: the checkpoint's)
        show_prompt: print the prompt before the output
        hub: a LoRA hub: also run through the user's retrieved adapters (pplug+lora-hub; a pplug checkpoint)
        store: user store: a SQLite file (or sqlite:///file) or a postgresql:// URL (default:
            $PPLUG_HOME/pplug_store.sqlite or ./pplug_store.sqlite)
    """
    from pplug.adapt.fast import user_batch
    from pplug.core.checkpoints import resolve
    from pplug.core.tasks import get_task
    from pplug.decode.inference import decode
    from pplug.store import open_store
    from pplug.store.validation import check_user_id

    check_user_id(user)  # before any file or store is opened
    with open_store(store, create=False) as user_store:
        user_store.persona(user)  # unknown user -> error before loading models
        resolved = resolve(checkpoint)
        model = load_model(resolved, placement)
        config = model.config
        spec = get_task(config.task)
        text = input if any(m in input for m in spec.query_markers) else spec.make_input(input)  # wrap plain content
        batch = user_batch(
            user_store, user, [text], spec, method=config.method, causal=not model.llm.is_seq2seq,
            max_history=config.max_history, persona_fields=persona_fields, use_persona=not no_persona,
            retrieval_k=config.retrieval_k, retriever=config.retriever, encoder=model.history_encoder,
            budget=model.llm.prompt_budget(),
        )
        if show_prompt:
            print(f"# checkpoint {resolved}; {len(batch.histories[0])} history items; prompt:\n{batch.prompts[0]}\n"
                  "# output")
        with user_hub_rows(hub, model, user_store.history_items(user, task=spec.name)):  # --hub: pplug+lora-hub
            print(decode(model, spec, batch, decoding=decoding or config.decoding,
                         max_new_tokens=max_new_tokens)[0])


def format_diff(ops: list[dict], limit: int = 8) -> str:
    """A JSON diff as one readable line: `~ /pattern/activity_count 3 -> 6; + /preference/mean_rating 3.7`."""
    parts = []
    for op in ops[:limit]:
        if op["op"] == "add":
            parts.append(f"+ {op['path']} {_short(op['value'])}")
        elif op["op"] == "remove":
            parts.append(f"- {op['path']}")
        else:
            parts.append(f"~ {op['path']} {_short(op['old'], 30)} -> {_short(op['value'], 30)}")
    if len(ops) > limit:
        parts.append(f"... ({len(ops) - limit} more)")
    return "; ".join(parts) if parts else "(no change)"


def _short(value: Any, n: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= n else text[: n - 3] + "..."


# --- pplug adapt ---


def adapt(*, checkpoint: str, store: str | None = None, rollback: bool = False, min_new: int = 32, epochs: int = 2,
          lr: float = 1e-3, history_dropout: float = 0.0, encoder_lr: float = 1e-4, batch_size: int = 8,
          val_fraction: float = 0.2, metric: str | None = None, seed: int = 0, no_persona: bool = False,
          device: str = "auto") -> None:
    """retrain on new interactions; promote if not worse (cron-safe); --rollback

    Args:
        checkpoint: run folder holding final/, v0001/ ... and LATEST
        store: user store: SQLite file or postgresql:// URL (default: as for `pplug user`)
        rollback: serve the current version's parent again
        min_new: new interactions needed to retrain (default: 32)
        epochs: passes over the examples of the new interactions (default: 2)
        lr: learning rate of the embedder's MLPs / instruction
        history_dropout: PPlug's history dropout (as train.py)
        encoder_lr: learning rate of the trainable input encoder
        batch_size: examples per optimizer step (default: 8)
        val_fraction: most recent share held out (default: 0.2)
        metric: deciding figure (default: the task's main metric; or 'loss')
        seed: seed of shuffling, dropout draws and torch (default: 0)
        no_persona: train without persona text in the prompts
        device: where to train: auto (cuda, then mps, then cpu), cuda, cpu
    """
    from pplug.adapt.slow import adapt as retrain_and_promote
    from pplug.core.checkpoints import rollback as rollback_run
    from pplug.core.checkpoints import serving_version
    from pplug.store import open_store
    from pplug.train.config import TrainConfig

    if rollback:
        before = serving_version(checkpoint)
        now = rollback_run(checkpoint)
        print(f"rolled back {checkpoint}: serving {now} (was {before})")
        return
    with open_store(store, create=False) as user_store:
        result = retrain_and_promote(
            user_store, checkpoint, min_new=min_new,
            training=TrainConfig(epochs=epochs, lr=lr, encoder_lr=encoder_lr, batch_size=batch_size, seed=seed,
                                 history_dropout=history_dropout),
            val_fraction=val_fraction, metric=metric, use_persona=not no_persona, device=device,
        )
    print(result.message)
    if result.report is not None:
        validation = result.report["validation"]
        print(json.dumps({"parent": validation["parent"], "candidate": validation["candidate"]}, sort_keys=True))


__all__ = ["adapt", "format_diff", "user_add_history", "user_create", "user_generate", "user_list", "user_show"]
