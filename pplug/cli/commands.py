"""The handlers of the `pplug` subcommands: `run_<command>(args) -> exit code`, one per subcommand of
`pplug.cli.main.build_parser`. Each imports what it runs inside its body, so `pplug --help` imports none of it."""

from __future__ import annotations

import sys


class CLIError(Exception):
    """An error to show the user as one line (exit code 2), without a traceback."""


# --- data layer: download, synth, score ---


def run_download(args) -> int:
    """`pplug download`."""
    from pplug.lamp.download import BASE_URL, DownloadError, download

    try:
        download(args.task, tuple(args.split), root=args.root, time_based=args.time_based,
                 base_url=args.base_url or BASE_URL, timeout=args.timeout, overwrite=args.overwrite)  # fmt: skip
    except DownloadError as e:
        raise CLIError(str(e)) from None
    return 0


def run_synth(args) -> int:
    """`pplug synth`."""
    from pplug.lamp.metrics import format_table
    from pplug.synth.generate import make_synthetic

    out = args.out or f"lamp_data/synthetic/{args.kind}"
    extra = {} if args.noise is None else {"noise": args.noise}
    if args.domain_shift:
        extra["domain_shift"] = True
    report = make_synthetic(out, kind=args.kind, n_users=args.users, seed=args.seed, **extra)
    print(f"wrote {out}: {report['task']} train {report['splits']['train']} / dev {report['splits']['dev']} "
          f"questions, {report['users']} users")  # fmt: skip
    rows = {k: report[k] for k in ("history_blind_ceiling", "user_mean_floor", "history_oracle") if k in report}
    print(format_table(rows, title="dev reference scores"))
    return 0


def run_score(args) -> int:
    """`pplug score`."""
    from pplug.lamp.data import load_outputs
    from pplug.core.io import atomic_write_json
    from pplug.lamp.metrics import format_table, score
    from pplug.core.tasks import get_task

    gold_task, golds = load_outputs(args.golds)
    pred_task, preds = load_outputs(args.preds)
    if args.task is None and pred_task != gold_task:
        raise CLIError(f"{args.preds}: field 'task': {pred_task} but the golds are {gold_task} (pass --task to force)")
    task = get_task(args.task or gold_task)
    metrics = score(task, preds, golds)
    print(format_table({args.preds: metrics}, title=f"{task.name} ({len(golds)} examples)"))
    if args.out:
        atomic_write_json(args.out, {"task": task.name, "num_examples": len(golds), "preds": str(args.preds),
                                     "golds": str(args.golds), "metrics": metrics})  # fmt: skip
    return 0


# --- life-long layer: user, adapt ---


def run_user(args) -> int:
    """`pplug user`."""
    from pplug.persona.schema import Persona, dump_persona, load_persona
    from pplug.persona.render import render
    from pplug.store import open_store
    from pplug.store.validation import check_user_id

    action = args.user_command
    if getattr(args, "user", None) is not None:
        check_user_id(args.user)  # before any file or store is opened
    if action == "create":
        persona = load_persona(args.persona) if args.persona else Persona()
        with open_store(args.store) as store:
            p = store.create_user(args.user, persona, task=args.task)
            print(f"created user {args.user!r} in {store.location} (task {store.user_task(args.user) or '-'}), persona v1")
            text = render(p)
            if text:
                print(f"persona: {text}")
        return 0
    with open_store(args.store, create=False) as store:
        if action == "list":
            for u in store.users():
                print(f"{u}\t{store.count_interactions(u)} interactions\tpersona v{store.persona_version(u)}")
            return 0
        if action == "add-history":
            from pplug.adapt.fast import add_history
            from pplug.lamp.data import read_items
            from pplug.encode.history import HistoryEncoder
            from pplug.store.validation import MAX_HISTORY_FILE_BYTES, InvalidInputError, check_items

            items = read_items(args.file, max_bytes=MAX_HISTORY_FILE_BYTES)
            if not items:
                raise CLIError(f"{args.file}: no history items")
            task = args.task or store.user_task(args.user)  # unknown user -> error before loading the encoder
            if task is None:
                raise CLIError(f"user {args.user!r} has no task: pass --task")
            try:  # the whole file before the encoder loads or anything is written
                items = check_items(items, task)
            except InvalidInputError as e:
                raise CLIError(f"{args.file}: {e}") from None
            encoder = HistoryEncoder(args.encoder, cache_path=args.embedding_cache, device=args.device)
            if args.hub:  # the adapters the user's persona text retrieves before the new items
                from pplug.hub.commands import adapter_change_line, folder_retrieval

                before = folder_retrieval(args.hub, store.history_items(args.user, task=task), encoder)
            res = add_history(store, args.user, items, encoder, task=task)
            span = f" (ids {res.ids[0]}..{res.ids[-1]})" if res.ids else ""
            print(f"added {len(res.ids)} interactions to {args.user!r}{span}; "
                  f"{store.count_interactions(args.user)} in total; persona v{res.persona_version}")
            if res.diff:
                print(f"persona change: {format_diff(res.diff)}")
            if args.hub:
                after = folder_retrieval(args.hub, store.history_items(args.user, task=task), encoder)
                print(adapter_change_line(before, after))
            return 0
        if action == "show":
            task = store.user_task(args.user)  # unknown user -> error before printing anything
            print(f"# user {args.user} ({store.location})")
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
            return _user_generate(args, store)
    raise CLIError(f"unknown user command {action!r}")


def _user_generate(args, store) -> int:
    from pplug.adapt.fast import user_batch
    from pplug.core.checkpoints import resolve
    from pplug.decode.inference import decode
    from pplug.core.tasks import get_task

    store.persona(args.user)  # unknown user -> error before loading models
    ckpt = resolve(args.checkpoint)
    model = _load_model(ckpt, args)
    cfg = model.config
    spec = get_task(cfg.task)
    text = args.input
    if not any(m in text for m in spec.query_markers):
        text = spec.make_input(text)  # plain content: wrap it in the task's instruction
    batch = user_batch(
        store, args.user, [text], spec, method=cfg.method, causal=not model.llm.is_seq2seq,
        max_history=cfg.max_history, persona_fields=args.persona_fields, use_persona=not args.no_persona,
        retrieval_k=cfg.retrieval_k, retriever=cfg.retriever, encoder=model.history_encoder,
        budget=model.llm.prompt_budget(),
    )
    if args.show_prompt:
        print(f"# checkpoint {ckpt}; {len(batch.histories[0])} history items; prompt:\n{batch.prompts[0]}\n# output")
    from pplug.hub.commands import user_hub_rows

    with user_hub_rows(args, model, store.history_items(args.user, task=spec.name)):  # --hub: pplug+lora-hub
        print(decode(model, spec, batch, decoding=args.decoding or cfg.decoding, max_new_tokens=args.max_new_tokens)[0])
    return 0


def _load_model(ckpt, args, llm=None):
    """The model of a resolved checkpoint folder on `--device`, with `--dtype` when given (one line on errors)."""
    from pplug.modeling.model import PPlugModel

    overrides = {"torch_dtype": args.dtype} if getattr(args, "dtype", None) else {}
    return PPlugModel.from_pretrained(ckpt, llm=llm, device=args.device, **overrides).eval()


def _short(v, n: int = 60) -> str:
    import json

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


def run_adapt(args) -> int:
    """`pplug adapt`."""
    import json

    from pplug.adapt.slow import adapt
    from pplug.core.checkpoints import rollback, serving_version
    from pplug.store import open_store

    if args.rollback:
        before = serving_version(args.checkpoint)
        now = rollback(args.checkpoint)
        print(f"rolled back {args.checkpoint}: serving {now} (was {before})")
        return 0
    with open_store(args.store, create=False) as store:
        res = adapt(
            store, args.checkpoint, min_new=args.min_new, epochs=args.epochs, lr=args.lr, encoder_lr=args.encoder_lr,
            batch_size=args.batch_size, val_fraction=args.val_fraction, metric=args.metric, seed=args.seed,
            use_persona=not args.no_persona, history_dropout=args.history_dropout, device=args.device,
        )
    print(res.message)
    if res.report is not None:
        v = res.report["validation"]
        print(json.dumps({"parent": v["parent"], "candidate": v["candidate"]}, sort_keys=True))
    return 0


def run_hub(args) -> int:
    """`pplug hub train`, `pplug hub retrieve` and `pplug hub retrain`."""
    from pathlib import Path

    if args.hub_command == "retrain":
        from pplug.hub.commands import run_hub_retrain

        return run_hub_retrain(args)

    if args.hub_command == "retrieve":
        from pplug.lamp.data import read_items
        from pplug.hub.model import retrieve_from_folder

        (persona,), (got,) = retrieve_from_folder(args.hub, [read_items(args.history)],
                                                  cache_path=args.embedding_cache)
        if got.cold_start:
            print("no history: cold start, the general adapter")
            return 0
        print(f"persona: {persona}")
        print("retrieved: " + ", ".join(f"{n} {w:.2f} (cosine {c:.3f})"
                                        for n, w, c in zip(got.adapters, got.weights, got.scores)))
        return 0

    from pplug.lamp.data import load_split
    from pplug.encode.history import HistoryEncoder
    from pplug.decode.inference import subsample
    from pplug.modeling.llm import FrozenLLM
    from pplug.hub.config import HUB_CONFIG_NAME, LoRAHubConfig
    from pplug.hub.train import HubTrainConfig, train_hub

    out = Path(args.out)
    if (out / HUB_CONFIG_NAME).exists() and not args.overwrite:
        raise CLIError(f"{out}: a hub is already there (pass --overwrite to replace it)")
    split = load_split(args.data, args.split, args.task)
    examples = subsample(split.examples, args.max_examples, args.seed)
    hub_config = LoRAHubConfig(task=split.task.name, base_model_name_or_path=args.base_model,
                               encoder_name_or_path=args.encoder, r=args.r, lora_alpha=args.lora_alpha,
                               top_k=args.top_k, temperature=args.retrieval_temperature,
                               combination_type=args.combination)
    train_config = HubTrainConfig(num_adapters=args.k, group_by=args.group_by, epochs=args.epochs,
                                  max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    llm = FrozenLLM(args.base_model, dtype=args.dtype or "auto", device=args.device,
                    max_input_tokens=args.max_input_tokens)
    encoder = HistoryEncoder(args.encoder, cache_path=args.embedding_cache, device=args.device)
    hub, record = train_hub(llm, encoder, examples, hub_config, train_config)
    hub.save_pretrained(out, training=record)
    print(f"wrote {out}: {len(hub.names)} group adapters + {hub.adapter_names[0]} on {len(examples)} "
          f"{split.task.name} examples of {record['users']} users")
    for name in hub.names:
        print(f"  {name} ({record['adapters'][name]['users']} users): {hub.descriptions[name][:100]}")
    return 0


# --- model: generate, evaluate ---


def decoding_options(args):
    """The DecodingSpec of `--num-samples --temperature --top-p --preference-weight --utility --sampling-seed
    --preference-models` (`--num-beams` > 1 also sets the width of `beam`)."""
    from pplug.decode.choose import DecodingSpec

    beams = getattr(args, "num_beams", 1)
    return DecodingSpec(num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
                        preference_weight=args.preference_weight, utility=args.utility, seed=args.sampling_seed,
                        preference_models=getattr(args, "preference_models", None),
                        **({"num_beams": beams} if beams > 1 else {}))


def run_generate(args) -> int:
    """`pplug generate`."""
    import json
    from pathlib import Path

    from pplug.core.checkpoints import CheckpointError, resolve
    from pplug.lamp.data import LaMPDataError, parse_questions, read_json, write_outputs
    from pplug.decode.inference import personalize
    from pplug.modeling.model import PPlugModel
    from pplug.core.tasks import get_task

    if args.input is not None and not args.history:
        raise CLIError("--input needs --history FILE.json (use [] in the file for a user without history)")
    if args.history and args.questions:
        raise CLIError("--history goes with --input; a questions file carries each user's profile")
    if not args.checkpoint and not args.hub:
        raise CLIError("pass --checkpoint DIR, --hub DIR (the lora-hub method), or both (pplug+lora-hub)")
    from pplug.hub.commands import generate_models, hub_task

    try:
        ckpt = resolve(args.checkpoint) if args.checkpoint else None
        config = PPlugModel.load_checkpoint_config(ckpt)[0] if ckpt else None
        task = get_task(config.task if config else hub_task(args.hub))
        if args.questions:
            path = Path(args.questions)
            examples = parse_questions(read_json(path), path, task)
        else:
            path = Path(args.history)
            hist = read_json(path)
            items = hist.get("profile") if isinstance(hist, dict) else hist
            if not isinstance(items, list):
                raise CLIError(f"{path}: expected a list of profile items (or an object with 'profile')")
            examples = parse_questions([{"id": "input", "input": args.input, "profile": items}], path, task)
        llm = None
        if args.base_model:
            from pplug.modeling.llm import FrozenLLM

            llm = FrozenLLM(args.base_model, dtype=args.dtype or (config.torch_dtype if config else "auto"),
                            device=args.device)
        model, hub = generate_models(args, ckpt, llm, _load_model)
    except (LaMPDataError, CheckpointError) as e:
        raise CLIError(str(e)) from None
    outputs = personalize(model, examples, decoding=args.decoding, batch_size=args.batch_size,
                          num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                          progress=len(examples) > (args.batch_size or 16),
                          **({"options": decoding_options(args), "hub": hub} if ckpt else {}))
    preds = {ex.id: out for ex, out in zip(examples, outputs)}
    if args.out:
        write_outputs(args.out, task.name, preds)
        print(f"wrote {len(preds)} predictions ({task.name}) to {args.out}")
    elif args.input is not None:
        print(preds["input"])
    else:
        print(json.dumps({"task": task.name, "golds": [{"id": k, "output": v} for k, v in preds.items()]},
                         indent=2, ensure_ascii=False))
    return 0


def run_evaluate(args) -> int:
    """`pplug evaluate`."""
    from pplug.decode.evaluate import evaluate

    report = evaluate(args.checkpoint, args.data, split=args.split, methods=args.method,
                      max_examples=args.max_examples, decodings=args.decoding, out=args.out,
                      batch_size=args.batch_size, seed=args.seed, base_model=args.base_model,
                      embedding_cache=args.embedding_cache, floors=args.floors, num_beams=args.num_beams,
                      persona=args.persona, max_new_tokens=args.max_new_tokens, device=args.device,
                      dtype=args.dtype, decoding_options=decoding_options(args), hub=args.hub)
    if "table" in report:
        print(report["table"])
    for row, path in report["files"].items():
        print(f"predictions ({row}): {path}")
    print(f"metrics: {report['metrics_file']}")
    return 0


# --- serving: serve, embed-user ---


def run_serve(args) -> int:
    """`pplug serve`."""
    import os
    import secrets

    import uvicorn

    from pplug.serve.app import create_app
    from pplug.store.schema import default_store_path

    admin_key = args.admin_key or os.environ.get("PPLUG_ADMIN_KEY")
    if not admin_key:
        admin_key = "pplug-admin-" + secrets.token_urlsafe(24)
        print(f"pplug serve: no --admin-key / PPLUG_ADMIN_KEY given; this run's admin key: {admin_key}", file=sys.stderr)
    app = create_app(args.checkpoint, args.store or default_store_path(), admin_key=admin_key, device=args.device,
                     max_batch=args.max_batch, window_ms=args.batch_window_ms, reload_interval=args.reload_interval,
                     model_name=args.model_name, embedding_cache=args.embedding_cache, llm_engine=args.engine,
                     expose_soft_prompts=args.expose_soft_prompts, **({"hub": args.hub} if args.hub else {}))
    snap = app.state.engine.snapshot
    print(f"pplug serve: {snap.folder} (version {snap.version}, task {app.state.engine.spec.name}) on "
          f"http://{args.host}:{args.port} (store {app.state.store.location}, max batch {args.max_batch}, "
          f"window {args.batch_window_ms} ms, engine {args.engine})",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    if app.state.engine.generator is not None:  # --engine vllm: stop its engine process before exiting
        app.state.engine.generator.close()
    return 0


def run_embed_user(args) -> int:
    """`pplug embed-user`."""
    import json
    from pathlib import Path

    from pplug.lamp.data import read_items
    from pplug.core.io import atomic_write_text
    from pplug.serve.privacy import embed_user

    items = read_items(args.history)
    doc = embed_user(args.checkpoint, items, task=args.task)
    atomic_write_text(Path(args.out), json.dumps(doc) + "\n")
    print(f"wrote {args.out}: {len(doc['embeddings'])} x {doc['dim']} embeddings ({doc['encoder']}, {doc['task']}); "
          f"{len(items) - len(doc['embeddings'])} older items left out; no history text is in the file")
    return 0


__all__ = [
    "CLIError", "decoding_options", "format_diff", "run_adapt", "run_download", "run_embed_user",
    "run_evaluate", "run_generate", "run_hub", "run_score", "run_serve", "run_synth", "run_user"
]
