"""The `pplug` command line. Each subcommand is one `_add_<name>` function below that registers
its parser and a handler; handlers import their module lazily so `pplug --help` stays fast."""

from __future__ import annotations

import argparse
import sys


class CLIError(Exception):
    """An error to show the user as one line (exit code 2), without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pplug",
        description="Personalize a frozen LLM with a PPlug user embedder: LaMP data, scoring, evaluation, "
        "generation, users and adaptation.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


# --- subcommands (each helper adds its own _add_<name> below and lists it in _SUBCOMMANDS) ---

_SUBCOMMANDS: list = []


# --- data layer: download, synth, score ---


def _add_download(sub) -> None:
    p = sub.add_parser("download", help="fetch official LaMP files into lamp_data/<task>/ (needs internet)")
    p.add_argument("task", help="LaMP_1 .. LaMP_7")
    p.add_argument("--time-based", action="store_true", help="the time-based split (lamp_data/time/<task>/)")
    p.add_argument("--split", nargs="+", default=["train", "dev"], choices=["train", "dev", "test"])
    p.add_argument("--root", default="lamp_data", help="data root (default: lamp_data)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request before giving up")
    p.add_argument("--overwrite", action="store_true", help="replace files already there")
    p.add_argument("--base-url", default=None, help="a mirror of https://ciir.cs.umass.edu/downloads/LaMP")
    p.set_defaults(handler=_run_download)


def _run_download(args) -> int:
    from pplug.download import BASE_URL, DownloadError, download

    try:
        download(args.task, tuple(args.split), root=args.root, time_based=args.time_based,
                 base_url=args.base_url or BASE_URL, timeout=args.timeout, overwrite=args.overwrite)  # fmt: skip
    except DownloadError as e:
        raise CLIError(str(e)) from None
    return 0


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic LaMP data with learnable per-user signal")
    p.add_argument("--kind", default="ratings", choices=["ratings", "tags", "titles"])
    p.add_argument("--out", default=None, help="output folder (default: lamp_data/synthetic/<kind>)")
    p.add_argument("--users", type=int, default=150, help="number of users")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=None, help="probability a user departs from their rule")
    p.add_argument("--domain-shift", action="store_true",
                   help="dev from another item domain, same users and personal signal (ratings, titles)")
    p.set_defaults(handler=_run_synth)


def _run_synth(args) -> int:
    from pplug.metrics import format_table
    from pplug.synth import make_synthetic

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


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="score predictions against golds exactly as the official LaMP script")
    p.add_argument("--preds", required=True, help="predictions file ({'task', 'golds': [{'id', 'output'}]})")
    p.add_argument("--golds", required=True, help="gold outputs file, e.g. lamp_data/LaMP_3/dev_outputs.json")
    p.add_argument("--task", default=None, help="task (default: the golds file's 'task'; LaMP_2N for old news)")
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    p.set_defaults(handler=_run_score)


def _run_score(args) -> int:
    from pplug.data import load_outputs
    from pplug.io import atomic_write_json
    from pplug.metrics import format_table, score
    from pplug.tasks import get_task

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


_SUBCOMMANDS += [_add_download, _add_synth, _add_score]


# --- life-long layer: user, adapt (handlers in pplug.adapt) ---


def _add_user(sub) -> None:
    p = sub.add_parser("user", help="users of a personalization store: persona, history, generation")
    users = p.add_subparsers(dest="user_command", required=True)

    def store_arg(q) -> None:
        q.add_argument("--store", default=None,
                       help="SQLite store (default: $PPLUG_HOME/pplug_store.sqlite or ./pplug_store.sqlite)")

    q = users.add_parser("create", help="add a user with a persona document (YAML or JSON)")
    q.add_argument("user", help="user id")
    q.add_argument("--persona", default=None, help="persona file (.yaml/.yml/.json); omitted: an empty persona")
    q.add_argument("--task", default="LaMP_3", help="task of the user's history (default: LaMP_3)")
    store_arg(q)
    q = users.add_parser("add-history", help="append interactions (LaMP profile items) and refresh the persona")
    q.add_argument("user", help="user id")
    q.add_argument("file", help="JSON list of profile items, JSON lines, or - for stdin")
    q.add_argument("--task", default=None, help="task of the items (default: the user's)")
    q.add_argument("--encoder", default="default", help="history encoder (use the checkpoint's; default: default)")
    q.add_argument("--embedding-cache", default=None, help="embedding cache file (default: the shared pplug cache)")
    q.add_argument("--device", default="auto", help="where the encoder runs: auto (default), cuda, mps, cpu")
    store_arg(q)
    q = users.add_parser("show", help="persona, history count and persona change log")
    q.add_argument("user", help="user id")
    q.add_argument("--diff-ops", type=int, default=6, help="diff operations shown per change (default: 6)")
    store_arg(q)
    q = users.add_parser("list", help="all users with their history counts")
    store_arg(q)
    q = users.add_parser("generate", help="personalized output for a user (store history + persona text)")
    q.add_argument("user", help="user id")
    q.add_argument("--checkpoint", required=True, help="a checkpoint folder or a run folder (serves its LATEST)")
    q.add_argument("--input", required=True, help="the input (LaMP-style, or just the content: it is wrapped)")
    q.add_argument("--persona-fields", default=None, help="comma-separated persona fields to render (default: all)")
    q.add_argument("--no-persona", action="store_true", help="leave the persona text out of the prompt")
    q.add_argument("--max-new-tokens", type=int, default=None, help="generation budget (default: the task's)")
    q.add_argument("--decoding", default=None, choices=["argmax", "expected", "median"],
                   help="ratings: argmax / expected / median (default: the checkpoint's)")
    q.add_argument("--show-prompt", action="store_true", help="print the prompt before the output")
    device_args(q)
    store_arg(q)
    p.set_defaults(handler=_run_user)


def device_args(p) -> None:
    """--device / --dtype, the same on every command that runs a model."""
    p.add_argument("--device", default="auto",
                   help="where to run: auto (cuda, then mps, then cpu; default), cuda, cuda:1, mps, cpu")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="frozen LLM dtype (default: the checkpoint's; auto = bf16 where the device runs it fast)")


def _run_user(args) -> int:
    from pplug.persona import Persona, dump_persona, load_persona, render
    from pplug.store import UserStore

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
            from pplug.adapt import add_history
            from pplug.history import HistoryEncoder

            items = read_items(args.file)
            store.persona(args.user)  # unknown user -> error before loading the encoder
            encoder = HistoryEncoder(args.encoder, cache_path=args.embedding_cache, device=args.device)
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
            return _user_generate(args, store)
    raise CLIError(f"unknown user command {action!r}")


def _user_generate(args, store) -> int:
    from pplug.adapt import user_batch
    from pplug.checkpoints import resolve
    from pplug.inference import decode
    from pplug.tasks import get_task

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
    print(decode(model, spec, batch, decoding=args.decoding or cfg.decoding, max_new_tokens=args.max_new_tokens)[0])
    return 0


def _load_model(ckpt, args, llm=None):
    """The model of a resolved checkpoint folder on `--device`, with `--dtype` when given (one line on errors)."""
    from pplug.model import PPlugModel

    overrides = {"torch_dtype": args.dtype} if getattr(args, "dtype", None) else {}
    return PPlugModel.from_pretrained(ckpt, llm=llm, device=args.device, **overrides).eval()


def read_items(source: str) -> list[dict]:
    """History items from a file or "-" (stdin): a JSON list, a JSON object with "profile", or JSONL."""
    import json
    from pathlib import Path

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
                raise CLIError(f"{name}: line {n}: not JSON ({e.msg}); expected a JSON list or JSON lines") from None
    if isinstance(data, dict) and isinstance(data.get("profile"), list):
        data = data["profile"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise CLIError(f"{name}: expected a JSON list of profile items, got {type(data).__name__}")
    for i, it in enumerate(data):
        if not isinstance(it, dict):
            raise CLIError(f"{name}: item {i}: expected a JSON object, got {type(it).__name__}")
    return data


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


def _add_adapt(sub) -> None:
    p = sub.add_parser("adapt", help="retrain on new interactions; promote if not worse (cron-safe); --rollback")
    p.add_argument("--checkpoint", required=True, help="run folder holding final/, v0001/ ... and LATEST")
    p.add_argument("--store", default=None, help="SQLite store (default: as for `pplug user`)")
    p.add_argument("--rollback", action="store_true", help="serve the current version's parent again")
    p.add_argument("--min-new", type=int, default=32, help="new interactions needed to retrain (default: 32)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the embedder's MLPs / instruction")
    p.add_argument("--history-dropout", type=float, default=0.0, help="PPlug's history dropout (as train.py)")
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="learning rate of the trainable input encoder")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--val-fraction", type=float, default=0.2, help="most recent share held out (default: 0.2)")
    p.add_argument("--metric", default=None, help="deciding figure (default: the task's main metric; or 'loss')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-persona", action="store_true", help="train without persona text in the prompts")
    p.add_argument("--device", default="auto", help="where to train: auto (cuda, then mps, then cpu), cuda, cpu")
    p.set_defaults(handler=_run_adapt)


def _run_adapt(args) -> int:
    import json

    from pplug.adapt import adapt
    from pplug.checkpoints import rollback, serving_version
    from pplug.store import UserStore

    if args.rollback:
        before = serving_version(args.checkpoint)
        now = rollback(args.checkpoint)
        print(f"rolled back {args.checkpoint}: serving {now} (was {before})")
        return 0
    with UserStore(args.store, create=False) as store:
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


_SUBCOMMANDS += [_add_user, _add_adapt]


# --- model: generate ---


def _decodings() -> list[str]:
    """Decoding names for --decoding (`TaskSpec.decodings` of every kind, the one list)."""
    from pplug.tasks import DECODINGS_BY_KIND

    return list(dict.fromkeys(d for ds in DECODINGS_BY_KIND.values() for d in ds))


def _add_decoding_options(p) -> None:
    """Settings of the candidate decodings (mbr, preference) of generation tasks."""
    g = p.add_argument_group("candidate decodings (generation tasks: mbr, preference)")
    g.add_argument("--num-samples", type=int, default=8, help="sampled candidates per row besides greedy (default: 8)")
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: 0.7)")
    g.add_argument("--top-p", type=float, default=0.95, help="nucleus mass kept when sampling (default: 0.95)")
    g.add_argument("--preference-weight", type=float, default=0.5,
                   help="w in (1 - w) * consensus + w * similarity to the user's past outputs (default: 0.5)")
    g.add_argument("--utility", default="rouge1", choices=["rouge1", "rougeL", "embedding"],
                   help="MBR utility between candidates (default: rouge1)")
    g.add_argument("--sampling-seed", type=int, default=0, help="sampling seed (each row's follows its id)")


_DECODING_HELP = ("label tasks: most likely label (argmax); ratings also expected value (best for RMSE) or median "
                  "(best for MAE) over 1..5; generation tasks: argmax (= greedy, beams with --num-beams), greedy, "
                  "beam, mbr (minimum Bayes risk over sampled candidates) or preference (weighted toward the "
                  "user's past outputs)")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="personalized outputs from a saved PPlug model (one input or a questions file)")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint folder, or a run folder (serves its LATEST version, else final/)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="one LaMP-style input text (use with --history)")
    src.add_argument("--questions", help="LaMP questions file: many users decoded in batches")
    p.add_argument("--history", help="JSON file: the user's profile items (a list, or an object with 'profile')")
    p.add_argument("--out", help="write LaMP-format predictions here (default: print)")
    p.add_argument("--decoding", default=None, choices=_decodings(), help=_DECODING_HELP + " (default: the checkpoint's)")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget (default: the task's)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per forward pass (default: 16 CPU, 64 GPU)")
    p.add_argument("--base-model", default=None, help="override the base LLM path (must be the same model)")
    _add_decoding_options(p)
    device_args(p)
    p.set_defaults(handler=_run_generate)


def _run_generate(args) -> int:
    import json
    from pathlib import Path

    from pplug.checkpoints import CheckpointError, resolve
    from pplug.data import LaMPDataError, parse_questions, read_json, write_outputs
    from pplug.evaluate import decoding_options
    from pplug.inference import personalize
    from pplug.model import PPlugModel
    from pplug.tasks import get_task

    if args.input is not None and not args.history:
        raise CLIError("--input needs --history FILE.json (use [] in the file for a user without history)")
    if args.history and args.questions:
        raise CLIError("--history goes with --input; a questions file carries each user's profile")
    try:
        ckpt = resolve(args.checkpoint)
        config, _ = PPlugModel.load_checkpoint_config(ckpt)
        task = get_task(config.task)
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
            from pplug.llm import FrozenLLM

            llm = FrozenLLM(args.base_model, dtype=args.dtype or config.torch_dtype, device=args.device)
        model = _load_model(ckpt, args, llm=llm)
    except (LaMPDataError, CheckpointError) as e:
        raise CLIError(str(e)) from None
    outputs = personalize(model, examples, decoding=args.decoding, batch_size=args.batch_size,
                          num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                          progress=len(examples) > (args.batch_size or 16),
                          options=decoding_options(args))
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


_SUBCOMMANDS += [_add_generate]


# --- training / evaluation: evaluate ---


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate methods side by side on a LaMP split (same examples, same LLM)")
    p.add_argument("--checkpoint", nargs="*", default=[], metavar="[METHOD=]DIR",
                   help="final/ or run folder(s), a folder of runs (one final/ per method), or method=DIR pairs")
    p.add_argument("--data", required=True, help="folder with {split}_questions.json / {split}_outputs.json")
    p.add_argument("--split", default="dev")
    p.add_argument("--out", default=None,
                   help="predictions file; several methods -> <stem>.<method>.json; metrics -> <stem>.metrics.json "
                        "(default: <run>/eval/<split>_preds.json)")
    p.add_argument("--method", nargs="+", default=None,
                   choices=["none", "prompt-tuned", "retrieval", "pplug", "pplug+retrieval"],
                   help="methods to run (default: none + every method with weights + pplug+retrieval)")
    p.add_argument("--max-examples", type=int, default=None, help="seeded random subset of the split")
    p.add_argument("--decoding", nargs="+", default=["argmax"], choices=_decodings(),
                   help=_DECODING_HELP + "; several give rows 'method [expected]', 'method [mbr]' ... (the cost per "
                   "row of generation decodings goes into the metrics JSON)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per forward pass (default: 16 CPU, 64 GPU)")
    p.add_argument("--seed", type=int, default=0, help="subsampling seed")
    p.add_argument("--base-model", default=None, help="frozen LLM for `none` when no checkpoint is given")
    p.add_argument("--embedding-cache", default=None, help="history-embedding cache file (default: shared cache)")
    p.add_argument("--floors", action="store_true", help="also score no-model floors (always-5, first words, ...)")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation budget for generation tasks (default: the task's, e.g. 24 for subjects)")
    p.add_argument("--persona", action="store_true",
                   help="write the persona derived from each user's history into the prompts (ablation)")
    _add_decoding_options(p)
    device_args(p)
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    from pplug.evaluate import run_cli

    return run_cli(args)


_SUBCOMMANDS += [_add_evaluate]


# --- serving: serve, embed-user (handlers in pplug.server / pplug.private) ---


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server: many users, one frozen LLM, dynamic batching")
    p.add_argument("--checkpoint", required=True, help="run folder (serves LATEST, picks up promotions) or checkpoint")
    p.add_argument("--store", default=None, help="SQLite user store (default: as for `pplug user`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")
    p.add_argument("--admin-key", default=None, help="admin API key (default: $PPLUG_ADMIN_KEY; else a random one)")
    p.add_argument("--max-batch", type=int, default=32, help="rows per forward pass (1: no batching)")
    p.add_argument("--batch-window-ms", type=float, default=10.0, help="wait for more requests after the first")
    p.add_argument("--reload-interval", type=float, default=1.0, help="seconds between checks of LATEST")
    p.add_argument("--model-name", default=None, help="model id clients pass (default: pplug-<run folder>)")
    p.add_argument("--embedding-cache", default=None, help="embedding cache file (default: the shared pplug cache)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    p.add_argument("--expose-soft-prompts", action="store_true", help="replies carry each input's soft prompt (debug)")
    p.set_defaults(handler=_run_serve)


def _run_serve(args) -> int:
    from pplug.server import cli_serve

    return cli_serve(args)


def _add_embed_user(sub) -> None:
    p = sub.add_parser("embed-user", help="privacy mode: a user vector from local history (the history stays here)")
    p.add_argument("--checkpoint", required=True, help="run or checkpoint folder (only its config is read)")
    p.add_argument("--history", required=True, help="JSON list of profile items, JSON lines, or - for stdin")
    p.add_argument("--out", required=True, help="the user vector JSON to write")
    p.add_argument("--task", default=None, help="task of the items (default: the checkpoint's)")
    p.set_defaults(handler=_run_embed_user)


def _run_embed_user(args) -> int:
    from pplug.private import cli_embed_user

    return cli_embed_user(args)


_SUBCOMMANDS += [_add_serve, _add_embed_user]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:  # incl. CheckpointError
        print(f"pplug {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
