"""Life-long adaptation: fast (new history, no training) and slow (periodic retraining with a safety net).

Fast adaptation (`add_history`), on every new interaction:
    append to the store -> embed once (cached; also the persona's long-term memory) -> recompute the
    derived persona fields (new persona version + JSON diff). The next request already sees the new
    history: PPlug reads all of it, so the user embedding -- and the output -- change with no training.
    Optionally, every `propose_every` interactions a pluggable proposer (e.g. an LLM, AI Persona's
    scheme) suggests persona edits, recorded as another version with its diff.

Slow adaptation (`adapt`), from cron:

    checkpoints/<run>/
        final/                 the trained model (train.py) -- version "final"
        v0001/  v0002/ ...     save_pretrained folders + adapt_report.json (figures, parent, watermark)
        LATEST                 one line naming the serving version ("v0002"); replaced atomically
        adapt_state.json       every attempt (promoted or refused) and rollbacks
        .adapt.lock            held while a run is in progress

    lock -> nothing new since the last attempt? no-op -> examples from interactions newer than the serving
    version's watermark -> hold out the most recent slice -> score the serving model on it -> train its
    copy on the rest -> score again -> not worse? save into .tmp-vNNNN, rename to vNNNN, replace LATEST.

`LATEST` is a plain file, not a symlink, because it works the same on every OS and filesystem
(Windows symlinks need privileges); it is written with `pplug.io.atomic_write_text`, i.e. os.replace.
A run killed at any point leaves LATEST naming the last good version; leftover temp folders are removed
by the next run. `rollback` points LATEST back at the serving version's parent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .io import atomic_write_json, atomic_write_text
from .persona import OUTPUT_FIELD, Persona, PersonaError, apply_updates, derive_from_history, diff, render
from .store import UserStore

LATEST_FILE = "LATEST"
STATE_FILE = "adapt_state.json"
REPORT_FILE = "adapt_report.json"
LOCK_FILE = ".adapt.lock"
BASE_VERSION = "final"
_VERSION_RE = re.compile(r"^v(\d{4,})$")

GENERATE_PERSONA_CHARS = 400
"""Bound on the persona text put in front of prompts by `user_batch` (about 100 LLM tokens)."""

# Field of a profile item that holds the content of the question it answers (the LaMP input's content).
INPUT_FIELD: dict[str, str] = {
    "LaMP_2": "description",
    "LaMP_2N": "text",
    "LaMP_3": "text",
    "LaMP_4": "text",
    "LaMP_5": "abstract",
    "LaMP_6": "text",
    "LaMP_7": "text",  # no paraphrase source is stored: the tweet is its own input (weak but consistent)
}

PersonaProposer = Callable[[Persona, list[dict], Any], dict | None]
"""(current persona, recent items, TaskSpec) -> partial persona dict of edits, or None for no change."""


class AdaptError(ValueError):
    """A one-line user-facing adaptation error."""


class AdaptBusyError(AdaptError):
    """Another adapt run holds the lock."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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

    name = task.name
    if name not in INPUT_FIELD or name not in OUTPUT_FIELD:
        raise AdaptError(f"task {name}: history items carry no (input, output) pair, so it cannot be retrained from interactions")
    missing = [f for f in (INPUT_FIELD[name], OUTPUT_FIELD[name]) if f not in item]
    if missing:
        raise AdaptError(f"interaction {example_id}: field '{missing[0]}': missing (needed to retrain {name})")
    return Example(
        id=example_id,
        input=task.make_input(str(item[INPUT_FIELD[name]])),
        profile=list(profile),
        output=str(item[OUTPUT_FIELD[name]]),
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


# --- checkpoint versions -------------------------------------------------------------------------


def _is_checkpoint(path: Path) -> bool:
    return (path / "pplug_config.json").is_file()


def versions(root: str | Path) -> list[str]:
    """Version folders under `root` ("v0001", ...), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if _VERSION_RE.match(p.name) and p.is_dir()), key=lambda n: int(n[1:]))


def serving_version(root: str | Path) -> str:
    """Name of the version `root` serves: LATEST's content, else "final" (or "." when root is a checkpoint)."""
    root = Path(root)
    latest = root / LATEST_FILE
    if latest.is_file():
        name = latest.read_text(encoding="utf-8").strip()
        if not _is_checkpoint(root / name):
            raise AdaptError(f"{latest}: names {name!r}, which is not a checkpoint folder under {root}")
        return name
    if _is_checkpoint(root / BASE_VERSION):
        return BASE_VERSION
    if _is_checkpoint(root):
        return "."
    raise AdaptError(f"{root}: no checkpoint here (expected {LATEST_FILE}, {BASE_VERSION}/ or pplug_config.json)")


def resolve_checkpoint(path: str | Path) -> Path:
    """The folder to load for `path`: a checkpoint folder itself, or a run root's serving version."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    if _is_checkpoint(path) and not (path / LATEST_FILE).is_file():
        return path
    return path / serving_version(path)


def read_report(root: str | Path, version: str) -> dict | None:
    """The `adapt_report.json` of a version (None for the base, which was not made by `adapt`)."""
    p = Path(root) / version / REPORT_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def _read_state(root: Path) -> dict:
    p = root / STATE_FILE
    if p.is_file():
        return json.loads(p.read_text(encoding="utf-8"))
    return {"attempts": [], "rollbacks": []}


def _write_state(root: Path, state: dict) -> None:
    atomic_write_json(root / STATE_FILE, state)


@contextlib.contextmanager
def run_lock(root: str | Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on `root/.adapt.lock`; a second holder gets AdaptBusyError at once.

    POSIX: fcntl.flock; Windows: msvcrt.locking. The OS drops the lock when the process dies, so a
    killed run never leaves a stale lock behind.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    f = open(path, "a+")
    try:
        try:
            try:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # pragma: no cover - Windows
                import msvcrt

                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise AdaptBusyError(f"another adapt run is in progress on {root} ({holder}); exiting") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {_now()}")
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock


def rollback(root: str | Path) -> str:
    """Point LATEST back at the serving version's parent; returns the version now served."""
    root = Path(root)
    with run_lock(root):
        current = serving_version(root)
        report = read_report(root, current)
        if report is None or not report.get("parent"):
            raise AdaptError(f"{root}: serving {current!r}, which has no parent version to roll back to")
        parent = report["parent"]
        if not _is_checkpoint(root / parent):
            raise AdaptError(f"{root}: parent version {parent!r} of {current!r} is missing")
        atomic_write_text(root / LATEST_FILE, parent + "\n")
        state = _read_state(root)
        state.setdefault("rollbacks", []).append({"at": _now(), "from": current, "to": parent})
        _write_state(root, state)
        return parent


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


def run_settings(ckpt_dir: str | Path, config: Any) -> dict[str, Any]:
    """How a checkpoint's prompts were built: method, retrieval_k, retriever (from the run's train.py
    config.yaml beside it when there is one, else inferred from the PPlug config)."""
    from .evaluate import run_config

    cfg = run_config(Path(ckpt_dir))
    method = cfg.get("method") or ("pplug" if config.use_user_embedding else "prompt-tuned")
    return {"method": method, "retrieval_k": cfg.get("retrieval_k"), "retriever": cfg.get("retriever") or "bm25"}


def _evaluate(model, task, examples, make_batch, batch_size: int, metric: str) -> dict[str, float]:
    import torch

    from .train_module import decode

    model.eval()
    if metric == "loss":
        total, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(examples), batch_size):
                chunk = examples[i : i + batch_size]
                total += float(model(make_batch(chunk, True))) * len(chunk)
                n += len(chunk)
        return {"loss": total / max(n, 1)}
    from .metrics import score

    preds: dict[str, str] = {}
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        with torch.no_grad():  # the same decoding `pplug evaluate` and validation during training use
            preds.update(zip((e.id for e in chunk), decode(model, task, make_batch(chunk, False))))
    return score(task, preds, {e.id: e.output for e in examples})


def adapt(
    store: UserStore,
    checkpoint_root: str | Path,
    min_new: int = 32,
    epochs: int = 2,
    lr: float = 1e-3,
    encoder_lr: float = 1e-4,
    weight_decay: float = 1e-4,
    batch_size: int = 8,
    val_fraction: float = 0.2,
    metric: str | None = None,
    seed: int = 0,
    persona_fields: Sequence[str] | None = None,
    use_persona: bool = True,
    evaluate_fn: Callable[[Any, list[Any]], dict[str, float]] | None = None,
    llm: Any = None,
    history_encoder: Any = None,
    log: Callable[[str], None] | None = None,
) -> AdaptResult:
    """Slow adaptation: retrain the serving checkpoint on new interactions, promote it if not worse.

    Args:
        store: the user store (all users' interactions of the checkpoint's task are used).
        checkpoint_root: the run folder (`checkpoints/<run>/`) holding final/, vNNNN/ and LATEST.
        min_new: do nothing until at least this many interactions arrived since the serving version.
        epochs, lr, encoder_lr, weight_decay, batch_size: the training loop: AdamW, `encoder_lr` for the
            trainable input encoder (a pretrained transformer) and `lr` for the rest (as train.py).
        val_fraction: share of the new interactions (the most recent ones) held out for validation.
        metric: the figure that decides promotion; default the task's main metric via
            `pplug.metrics.score`; "loss" uses the validation LM loss.
        seed: seeds the shuffling and torch.
        persona_fields, use_persona: the persona text in the prompts (as `user generate` serves it).
        evaluate_fn: custom validation, (model, examples) -> {metric: value}; overrides `metric`'s scorer.
        llm, history_encoder: reuse already-loaded parts (tests, long-running services).
        log: progress callback (default: print to stderr).

    Returns:
        AdaptResult ("noop" | "promoted" | "refused") with a one-line message and the report.

    Raises:
        AdaptBusyError: another run holds the lock.
    """
    import torch

    from .baselines import build_batch
    from .metrics import METRIC_DIRECTIONS
    from .model import PPlugModel
    from .tasks import get_task

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
        parent_report = read_report(root, parent) or {}
        watermark = int(parent_report.get("watermark", 0))
        state = _read_state(root)
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
        personas: dict[str, str | None] = {}
        for e in examples:
            if e.user_id not in personas:
                personas[e.user_id] = (
                    render(store.persona(e.user_id), persona_fields, max_chars=GENERATE_PERSONA_CHARS)
                    if use_persona
                    else None
                )

        say(f"loading {parent_dir}")
        model = PPlugModel.from_pretrained(parent_dir, llm=llm, history_encoder=history_encoder)
        run = run_settings(parent_dir, model.config)
        causal = not model.llm.is_seq2seq

        def make_batch(chunk, with_targets: bool):
            return build_batch(
                spec, chunk, run["method"], causal=causal, max_history=model.config.max_history,
                retrieval_k=run["retrieval_k"], retriever=run["retriever"], encoder=model.history_encoder,
                personas=[personas[e.user_id] for e in chunk], with_targets=with_targets,
                budget=model.llm.prompt_budget(),
            )

        metric = metric or spec.main_metric
        higher = METRIC_DIRECTIONS.get(metric, True) if metric != "loss" else False

        def validate() -> dict[str, float]:
            if evaluate_fn is not None:
                return dict(evaluate_fn(model, val_ex))
            return _evaluate(model, spec, val_ex, make_batch, batch_size, metric)

        say(f"{len(examples)} new interactions from {len({e.user_id for e in examples})} users: "
            f"train {len(train_ex)}, validate {len(val_ex)} ({metric})")
        before = validate()
        if metric not in before:
            raise AdaptError(f"validation returned {sorted(before)}, without the deciding metric {metric!r}")

        torch.manual_seed(seed)
        rng = random.Random(seed)
        enc, rest = [], []
        for pname, p in model.named_parameters():
            if p.requires_grad:
                (enc if "input_encoder" in pname else rest).append(p)
        groups = [{"params": rest, "lr": lr}] + ([{"params": enc, "lr": encoder_lr}] if enc else [])
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
        losses = []
        t0 = time.monotonic()
        for epoch in range(epochs):
            order = list(train_ex)
            rng.shuffle(order)
            model.train()
            total = 0.0
            for i in range(0, len(order), batch_size):
                chunk = order[i : i + batch_size]
                loss = model(make_batch(chunk, True))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(chunk)
            losses.append(total / max(len(order), 1))
            say(f"epoch {epoch + 1}/{epochs}: train loss {losses[-1]:.4f}")
        model.eval()
        after = validate()
        a, b = float(after[metric]), float(before[metric])
        not_worse = (a >= b if higher else a <= b) and a == a  # NaN counts as worse
        number = max([int(v[1:]) for v in versions(root)], default=0) + 1
        name = f"v{number:04d}"
        report = {
            "version": name,
            "parent": parent,
            "created_at": _now(),
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
            "method": run["method"],
            "train": {"epochs": epochs, "lr": lr, "encoder_lr": encoder_lr, "weight_decay": weight_decay, "batch_size": batch_size,
                      "seed": seed, "loss": losses, "seconds": round(time.monotonic() - t0, 1)},
            "persona_in_prompt": bool(use_persona),
        }
        figures = f"{metric} {b:.4f} -> {a:.4f} on {len(val_ex)} held-out interactions"
        if not_worse:
            tmp = root / f".tmp-{name}-{os.getpid()}"
            model.save_pretrained(tmp)
            atomic_write_json(tmp / REPORT_FILE, report)
            os.replace(tmp, root / name)  # the version appears complete or not at all
            atomic_write_text(root / LATEST_FILE, name + "\n")
            status, msg = "promoted", f"promoted {name} (parent {parent}): {figures}"
        else:
            status, msg = "refused", f"refused candidate (parent {parent} stays): {figures}"
            name = parent
        state["last_attempt_watermark"] = last_seen
        state.setdefault("attempts", []).append({k: report[k] for k in ("created_at", "parent", "metric",
                                                                         "validation", "promoted", "watermark",
                                                                         "n_interactions")}
                                                | {"version": report["version"] if not_worse else None})
        _write_state(root, state)
        return AdaptResult(status, msg, name, report)


# --- command line (`pplug user ...`, `pplug adapt ...`; parsers live in pplug/cli.py) ---------------


def read_items(source: str) -> list[dict]:
    """History items from a file or "-" (stdin): a JSON list, a JSON object with "profile", or JSONL."""
    if source == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: history file not found") from None
        name = str(path)
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AdaptError(f"{name}: line {n}: not JSON ({e.msg}); expected a JSON list or JSON lines") from None
    if isinstance(data, dict) and isinstance(data.get("profile"), list):
        data = data["profile"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise AdaptError(f"{name}: expected a JSON list of profile items, got {type(data).__name__}")
    for i, it in enumerate(data):
        if not isinstance(it, dict):
            raise AdaptError(f"{name}: item {i}: expected a JSON object, got {type(it).__name__}")
    return data


def _short(v: Any, n: int = 60) -> str:
    t = json.dumps(v, ensure_ascii=False, sort_keys=True)
    return t if len(t) <= n else t[: n - 3] + "..."


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


def cli_user(args) -> int:
    """Handler of `pplug user <create|add-history|show|list|generate>`."""
    from .persona import Persona, dump_persona, load_persona

    action = args.user_command
    if action == "create":
        persona = load_persona(args.persona) if args.persona else Persona()
        with UserStore(args.store) as store:
            p = store.create_user(args.user, persona, task=args.task)
            print(f"created user {args.user!r} in {store.path} (task {store.user_task(args.user) or '-'}), persona v1")
            text = render(p)
            if text:
                print(f"persona: {text}")
        return 0
    with UserStore(args.store, create=False) as store:
        if action == "list":
            for u in store.users():
                print(f"{u}\t{store.count_interactions(u)} interactions\tpersona v{store.persona_version(u)}")
            return 0
        if action == "add-history":
            from .history import HistoryEncoder

            items = read_items(args.file)
            store.persona(args.user)  # unknown user -> error before loading the encoder
            encoder = HistoryEncoder(args.encoder, cache_path=args.embedding_cache)
            res = add_history(store, args.user, items, encoder, task=args.task)
            span = f" (ids {res.ids[0]}..{res.ids[-1]})" if res.ids else ""
            print(f"added {len(res.ids)} interactions to {args.user!r}{span}; "
                  f"{store.count_interactions(args.user)} in total; persona v{res.persona_version}")
            if res.diff:
                print(f"persona change: {format_diff(res.diff)}")
            return 0
        if action == "show":
            task = store.user_task(args.user)  # unknown user -> error before printing anything
            print(f"# user {args.user} ({store.path})")
            print(f"task: {task or '-'}")
            counts = store.count_by_task(args.user)
            print("history: " + (", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "0") + " interactions")
            print(f"# persona v{store.persona_version(args.user)}")
            print(dump_persona(store.persona(args.user)).rstrip())
            print("# persona change log")
            for ch in store.persona_log(args.user):
                note = f" ({ch.message})" if ch.message else ""
                print(f"v{ch.version} {ch.created_at[:19]} {ch.source}{note}: {format_diff(ch.diff, limit=args.diff_ops)}")
            return 0
        if action == "generate":
            return _cli_generate(args, store)
    raise AdaptError(f"unknown user command {action!r}")


def _cli_generate(args, store: UserStore) -> int:
    from .model import PPlugModel
    from .tasks import get_task
    from .train_module import decode

    store.persona(args.user)  # unknown user -> error before loading models
    ckpt = resolve_checkpoint(args.checkpoint)
    model = PPlugModel.from_pretrained(ckpt)
    model.eval()
    spec = get_task(model.config.task)
    text = args.input
    if not any(m in text for m in spec.query_markers):
        text = spec.make_input(text)  # plain content: wrap it in the task's instruction
    run = run_settings(ckpt, model.config)
    batch = user_batch(
        store, args.user, [text], spec, method=run["method"], causal=not model.llm.is_seq2seq,
        max_history=model.config.max_history, persona_fields=args.persona_fields, use_persona=not args.no_persona,
        retrieval_k=run["retrieval_k"], retriever=run["retriever"], encoder=model.history_encoder,
        budget=model.llm.prompt_budget(),
    )
    if args.show_prompt:
        print(f"# checkpoint {ckpt}; {len(batch.histories[0])} history items; prompt:\n{batch.prompts[0]}\n# output")
    out = decode(model, spec, batch, max_new_tokens=args.max_new_tokens)[0]
    print(out)
    return 0


def cli_adapt(args) -> int:
    """Handler of `pplug adapt` (and `pplug adapt --rollback`)."""
    if args.rollback:
        root = Path(args.checkpoint)
        before = serving_version(root)
        now = rollback(root)
        print(f"rolled back {root}: serving {now} (was {before})")
        return 0
    with UserStore(args.store, create=False) as store:
        res = adapt(
            store, args.checkpoint, min_new=args.min_new, epochs=args.epochs, lr=args.lr, encoder_lr=args.encoder_lr,
            batch_size=args.batch_size, val_fraction=args.val_fraction, metric=args.metric, seed=args.seed,
            use_persona=not args.no_persona,
        )
    print(res.message)
    if res.report is not None:
        v = res.report["validation"]
        print(json.dumps({"parent": v["parent"], "candidate": v["candidate"]}, sort_keys=True))
    return 0


__all__ = [
    "cli_adapt",
    "cli_user",
    "format_diff",
    "read_items",
    "AdaptBusyError",
    "AdaptError",
    "AdaptResult",
    "AddHistoryResult",
    "INPUT_FIELD",
    "PersonaProposer",
    "add_history",
    "adapt",
    "item_example",
    "llm_proposer",
    "run_settings",
    "read_report",
    "resolve_checkpoint",
    "rollback",
    "run_lock",
    "serving_version",
    "user_batch",
    "versions",
]
