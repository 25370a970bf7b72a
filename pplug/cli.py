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
    q.add_argument("--show-prompt", action="store_true", help="print the prompt before the output")
    store_arg(q)
    p.set_defaults(handler=_run_user)


def _run_user(args) -> int:
    from pplug.adapt import cli_user

    return cli_user(args)


def _add_adapt(sub) -> None:
    p = sub.add_parser("adapt", help="retrain on new interactions; promote if not worse (cron-safe); --rollback")
    p.add_argument("--checkpoint", required=True, help="run folder holding final/, v0001/ ... and LATEST")
    p.add_argument("--store", default=None, help="SQLite store (default: as for `pplug user`)")
    p.add_argument("--rollback", action="store_true", help="serve the current version's parent again")
    p.add_argument("--min-new", type=int, default=32, help="new interactions needed to retrain (default: 32)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the embedder's MLPs / instruction")
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="learning rate of the trainable input encoder")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--val-fraction", type=float, default=0.2, help="most recent share held out (default: 0.2)")
    p.add_argument("--metric", default=None, help="deciding figure (default: the task's main metric; or 'loss')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-persona", action="store_true", help="train without persona text in the prompts")
    p.set_defaults(handler=_run_adapt)


def _run_adapt(args) -> int:
    from pplug.adapt import cli_adapt

    return cli_adapt(args)


_SUBCOMMANDS += [_add_user, _add_adapt]


# --- model: generate ---


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="personalized outputs from a saved PPlug model (one input or a questions file)")
    p.add_argument("--checkpoint", required=True, help="folder written by save_pretrained (or a run folder with final/)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="one LaMP-style input text (use with --history)")
    src.add_argument("--questions", help="LaMP questions file: many users decoded in batches")
    p.add_argument("--history", help="JSON file: the user's profile items (a list, or an object with 'profile')")
    p.add_argument("--out", help="write LaMP-format predictions here (default: print)")
    p.add_argument("--method", default=None, help="prompt method (default: from the run's config.yaml, else "
                   "pplug / prompt-tuned from the checkpoint)")
    p.add_argument("--retrieval-k", type=int, default=None, help="retrieved items in the prompt (retrieval methods)")
    p.add_argument("--decoding", default="argmax", choices=["argmax", "expected", "median"],
                   help="label tasks: most likely label; ratings (LaMP_3) also: expected value (best for RMSE) or "
                        "median (best for MAE) over 1..5")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget (default: the task's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--base-model", default=None, help="override the base LLM path (must be the same model)")
    p.set_defaults(handler=_run_generate)


def _run_generate(args) -> int:
    import json
    from pathlib import Path

    from pplug.data import LaMPDataError, parse_questions, read_json, write_outputs
    from pplug.evaluate import predict, run_config
    from pplug.model import CONFIG_NAME, CheckpointError, PPlugModel
    from pplug.tasks import get_task

    ckpt = Path(args.checkpoint)
    if not (ckpt / CONFIG_NAME).is_file() and (ckpt / "final" / CONFIG_NAME).is_file():
        ckpt = ckpt / "final"
    if args.input is not None and not args.history:
        raise CLIError("--input needs --history FILE.json (use [] in the file for a user without history)")
    if args.history and args.questions:
        raise CLIError("--history goes with --input; a questions file carries each user's profile")
    try:
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

            llm = FrozenLLM(args.base_model, dtype=config.torch_dtype)
        model = PPlugModel.from_pretrained(ckpt, llm=llm)
    except (LaMPDataError, CheckpointError) as e:
        raise CLIError(str(e)) from None
    model.eval()
    run = run_config(ckpt)
    method = args.method or run.get("method") or ("pplug" if config.use_user_embedding else "prompt-tuned")
    retrieval_k = args.retrieval_k if args.retrieval_k is not None else run.get("retrieval_k")
    preds = predict(model, task, examples, method, causal=not model.llm.is_seq2seq, decodings=[args.decoding],
                    batch_size=args.batch_size, max_history=config.max_history, retrieval_k=retrieval_k,
                    retriever=run.get("retriever") or "bm25", encoder=model.history_encoder,
                    num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                    progress=len(examples) > args.batch_size)[args.decoding]
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
    p.add_argument("--decoding", nargs="+", default=["argmax"], choices=["argmax", "expected", "median"],
                   help="ratings: most likely label, expected value (best for RMSE) and/or median (best for MAE) "
                        "over 1..5 (rows 'method [expected]', 'method [median]')")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="subsampling seed")
    p.add_argument("--base-model", default=None, help="frozen LLM for `none` when no checkpoint is given")
    p.add_argument("--embedding-cache", default=None, help="history-embedding cache file (default: shared cache)")
    p.add_argument("--floors", action="store_true", help="also score no-model floors (always-5, first words, ...)")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation budget for generation tasks (default: the task's, 128 for LaMP_4-7)")
    p.add_argument("--persona", action="store_true",
                   help="write the persona derived from each user's history into the prompts (ablation)")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    from pplug.evaluate import run_cli

    return run_cli(args)


_SUBCOMMANDS += [_add_evaluate]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        print(f"pplug {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
