"""The `pplug` command line. Each subcommand is one `_add_<name>` function below that registers
its parser and a handler; handlers import their module lazily so `pplug --help` stays fast."""

from __future__ import annotations

import argparse
import sys


class CLIError(Exception):
    """An error to show the user as one line (exit code 2), without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pplug", description=__doc__.splitlines()[0])
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
    p.set_defaults(handler=_run_download)


def _run_download(args) -> int:
    from pplug.download import DownloadError, download

    try:
        download(args.task, tuple(args.split), root=args.root, time_based=args.time_based,
                 timeout=args.timeout, overwrite=args.overwrite)  # fmt: skip
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
    p.set_defaults(handler=_run_synth)


def _run_synth(args) -> int:
    from pplug.metrics import format_table
    from pplug.synth import make_synthetic

    out = args.out or f"lamp_data/synthetic/{args.kind}"
    extra = {} if args.noise is None else {"noise": args.noise}
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
