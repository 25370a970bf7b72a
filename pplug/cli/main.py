"""The `pplug` command line. Each subcommand is one `_add_<name>` function below that registers its
parser and its handler, `pplug.cli.commands.run_<name>`; handlers import their module lazily so `pplug --help`
stays fast."""

from __future__ import annotations

import argparse
import sys

from pplug.cli import commands
from .commands import CLIError


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


# --- subcommands (each `_add_<name>` below registers one; `_SUBCOMMANDS` lists them in help order) ---

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
    p.set_defaults(handler=commands.run_download)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic LaMP data with learnable per-user signal")
    p.add_argument("--kind", default="ratings", choices=["ratings", "tags", "titles"])
    p.add_argument("--out", default=None, help="output folder (default: lamp_data/synthetic/<kind>)")
    p.add_argument("--users", type=int, default=150, help="number of users")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=None, help="probability a user departs from their rule")
    p.add_argument("--domain-shift", action="store_true",
                   help="dev from another item domain, same users and personal signal (ratings, titles)")
    p.set_defaults(handler=commands.run_synth)


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="score predictions against golds exactly as the official LaMP script")
    p.add_argument("--preds", required=True, help="predictions file ({'task', 'golds': [{'id', 'output'}]})")
    p.add_argument("--golds", required=True, help="gold outputs file, e.g. lamp_data/LaMP_3/dev_outputs.json")
    p.add_argument("--task", default=None, help="task (default: the golds file's 'task'; LaMP_2N for old news)")
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    p.set_defaults(handler=commands.run_score)


_SUBCOMMANDS += [_add_download, _add_synth, _add_score]


# --- life-long layer: user, adapt ---


def _add_user(sub) -> None:
    p = sub.add_parser("user", help="users of a personalization store: persona, history, generation")
    users = p.add_subparsers(dest="user_command", required=True)

    def store_arg(q) -> None:
        q.add_argument("--store", default=None,
                       help="user store: a SQLite file (or sqlite:///file) or a postgresql:// URL "
                            "(default: $PPLUG_HOME/pplug_store.sqlite or ./pplug_store.sqlite)")

    q = users.add_parser("create", help="add a user with a persona document (YAML or JSON)")
    q.add_argument("user", help="user id: 1 to 128 letters, digits and . _ @ -")
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
    q.add_argument("--hub", default=None,
                   help="a LoRA hub: also print the adapters the user's persona retrieves, before -> after")
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
    q.add_argument("--hub", default=None, help="a LoRA hub: also run through the user's retrieved adapters "
                                               "(pplug+lora-hub; a pplug checkpoint)")
    device_args(q)
    store_arg(q)
    p.set_defaults(handler=commands.run_user)


def device_args(p) -> None:
    """--device / --dtype, the same on every command that runs a model."""
    p.add_argument("--device", default="auto",
                   help="where to run: auto (cuda, then mps, then cpu; default), cuda, cuda:1, mps, cpu")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="frozen LLM dtype (default: the checkpoint's; auto = bf16 where the device runs it fast)")


def _add_adapt(sub) -> None:
    p = sub.add_parser("adapt", help="retrain on new interactions; promote if not worse (cron-safe); --rollback")
    p.add_argument("--checkpoint", required=True, help="run folder holding final/, v0001/ ... and LATEST")
    p.add_argument("--store", default=None,
                   help="user store: SQLite file or postgresql:// URL (default: as for `pplug user`)")
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
    p.set_defaults(handler=commands.run_adapt)


def _add_hub(sub) -> None:
    p = sub.add_parser("hub", help="LoRA hub: one adapter per group of similar users, retrieved by persona text")
    hub = p.add_subparsers(dest="hub_command", required=True)
    q = hub.add_parser("train", help="group the users of a LaMP split (KMeans) and train one LoRA per group")
    q.add_argument("--data", required=True, help="folder with {split}_questions.json / {split}_outputs.json")
    q.add_argument("--out", required=True, help="the hub folder to write (hub.json + adapters/<name>/)")
    q.add_argument("--k", type=int, default=8,
                   help="user groups, one adapter each, besides the general one (default: 8)")
    q.add_argument("--split", default="train")
    q.add_argument("--task", default=None, help="task (default: the data's)")
    q.add_argument("--group-by", default="persona", choices=["persona", "history"],
                   help="cluster persona-text embeddings (default) or mean history embeddings")
    q.add_argument("--base-model", default="default", help="the frozen LLM (default: SmolLM2-135M-Instruct)")
    q.add_argument("--encoder", default="default", help="sentence encoder of personas and descriptions")
    q.add_argument("--embedding-cache", default=None, help="embedding cache file (default: the shared pplug cache)")
    q.add_argument("--r", type=int, default=8, help="LoRA rank (default: 8)")
    q.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha (default: 16)")
    q.add_argument("--top-k", type=int, default=2, help="adapters retrieved per user (default: 2)")
    q.add_argument("--retrieval-temperature", type=float, default=0.1,
                   help="softmax temperature over the top-k cosine similarities (default: 0.1)")
    q.add_argument("--combination", default="cat", choices=["cat", "linear"],
                   help="how retrieved adapters merge (peft add_weighted_adapter; default: cat)")
    q.add_argument("--epochs", type=int, default=1)
    q.add_argument("--max-steps", type=int, default=None, help="optimizer steps per adapter at most")
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--lr", type=float, default=2e-4, help="peak learning rate of the LoRA weights (default: 2e-4)")
    q.add_argument("--max-examples", type=int, default=None, help="seeded random subset of the split")
    q.add_argument("--max-input-tokens", type=int, default=256, help="prompt tokens kept per row (default: 256)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--overwrite", action="store_true", help="replace a hub already at --out")
    device_args(q)
    q = hub.add_parser("retrieve", help="the adapters a user's history retrieves (through its persona text)")
    q.add_argument("--hub", required=True, help="a hub folder written by `pplug hub train`")
    q.add_argument("--history", required=True, help="JSON list of profile items, JSON lines, or - for stdin")
    q.add_argument("--embedding-cache", default=None, help="embedding cache file (default: the shared pplug cache)")
    from pplug.hub.commands import add_retrain_parser

    add_retrain_parser(hub, device_args)
    p.set_defaults(handler=commands.run_hub)


_SUBCOMMANDS += [_add_user, _add_adapt, _add_hub]


# --- model: generate ---


def _decodings() -> list[str]:
    """Decoding names for --decoding (`TaskSpec.decodings` of every kind, the one list)."""
    from pplug.core.tasks import DECODINGS_BY_KIND

    return list(dict.fromkeys(d for ds in DECODINGS_BY_KIND.values() for d in ds))


def _add_decoding_options(p) -> None:
    """Settings of the candidate decodings (mbr, preference, reward-mbr) of generation tasks."""
    g = p.add_argument_group("candidate decodings (generation tasks: mbr, preference, reward-mbr)")
    g.add_argument("--num-samples", type=int, default=8, help="sampled candidates per row besides greedy (default: 8)")
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: 0.7)")
    g.add_argument("--top-p", type=float, default=0.95, help="nucleus mass kept when sampling (default: 0.95)")
    g.add_argument("--preference-weight", type=float, default=0.5,
                   help="w in (1 - w) * consensus + w * similarity to the user's past outputs (preference) or "
                        "w * the user's facet reward (reward-mbr) (default: 0.5)")
    g.add_argument("--utility", default="rouge1", choices=["rouge1", "rougeL", "embedding"],
                   help="MBR utility between candidates (default: rouge1)")
    g.add_argument("--sampling-seed", type=int, default=0, help="sampling seed (each row's follows its id)")
    g.add_argument("--preference-models", default=None,
                   help="reward-mbr: folder of facet preference models (`pplug prefs train --out`)")


_DECODING_HELP = ("label tasks: most likely label (argmax); ratings also expected value (best for RMSE) or median "
                  "(best for MAE) over 1..5; generation tasks: argmax (= greedy, beams with --num-beams), greedy, "
                  "beam, mbr (minimum Bayes risk over sampled candidates), preference (weighted toward the "
                  "user's past outputs) or reward-mbr (weighted by the user's facet preference models)")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="personalized outputs from a saved PPlug model (one input or a questions file)")
    p.add_argument("--checkpoint", default=None,
                   help="a checkpoint folder, or a run folder (serves its LATEST version, else final/)")
    p.add_argument("--hub", default=None, help="a LoRA hub: alone the lora-hub method, with a pplug --checkpoint "
                                               "pplug+lora-hub (each row through its user's retrieved adapters)")
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
    p.set_defaults(handler=commands.run_generate)


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
                   choices=["none", "prompt-tuned", "retrieval", "pplug", "pplug+retrieval", "lora-hub",
                            "pplug+lora-hub"],
                   help="methods to run (default: none + every method with weights + pplug+retrieval; with --hub "
                        "also lora-hub and pplug+lora-hub)")
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
    p.add_argument("--hub", default=None, help="a LoRA hub of the same base LLM, for lora-hub and pplug+lora-hub")
    _add_decoding_options(p)
    device_args(p)
    p.set_defaults(handler=commands.run_evaluate)


def _add_prefs(sub) -> None:
    p = sub.add_parser("prefs", help="facet preference models (length, formality, topic) for reward-mbr decoding")
    prefs = p.add_subparsers(dest="prefs_command", required=True)
    q = prefs.add_parser("train", help="train one reward model per facet from a LaMP split's users' past outputs")
    q.add_argument("--data", required=True, help="folder with {split}_questions.json / {split}_outputs.json")
    q.add_argument("--out", required=True, help="folder to write, one <facet>/ (config.json + model.safetensors) each")
    q.add_argument("--split", default="train")
    q.add_argument("--task", default=None, help="task (default: the data's)")
    q.add_argument("--facets", nargs="+", default=["length", "formality", "topic"],
                   choices=["length", "formality", "topic"], help="facets to train (default: all three)")
    q.add_argument("--max-users", type=int, default=150, help="seeded random subset of users (default: 150)")
    q.add_argument("--items-per-user", type=int, default=6, help="past outputs per user paired (default: 6)")
    q.add_argument("--hidden", type=int, default=16, help="hidden units per head, 0 for linear (default: 16)")
    q.add_argument("--epochs", type=int, default=30)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--encoder", default="default", help="sentence encoder (use the checkpoint's; default: default)")
    q.add_argument("--embedding-cache", default=None, help="embedding cache file (default: the shared pplug cache)")
    p.set_defaults(handler=_run_prefs)


def _run_prefs(args) -> int:
    from pplug.train.preference import run_prefs

    return run_prefs(args)


_SUBCOMMANDS += [_add_evaluate, _add_prefs]


# --- serving: serve, embed-user ---


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server: many users, one frozen LLM, dynamic batching")
    p.add_argument("--checkpoint", required=True, help="run folder (serves LATEST, picks up promotions) or checkpoint")
    p.add_argument("--store", default=None,
                   help="user store: SQLite file or postgresql:// URL (default: as for `pplug user`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf",
                   help="what generates: hf (default) or vllm (pip install pplug[vllm]; labels are still scored on hf)")
    p.add_argument("--admin-key", default=None, help="admin API key (default: $PPLUG_ADMIN_KEY; else a random one)")
    p.add_argument("--max-batch", type=int, default=32, help="rows per forward pass (1: no batching)")
    p.add_argument("--batch-window-ms", type=float, default=10.0, help="wait for more requests after the first")
    p.add_argument("--reload-interval", type=float, default=1.0,
                   help="seconds between checks of the checkpoint's LATEST and, with --hub, the hub's LATEST "
                        "(a newly promoted version of either is served without a restart)")
    p.add_argument("--model-name", default=None, help="model id clients pass (default: pplug-<run folder>)")
    p.add_argument("--embedding-cache", default=None, help="embedding cache file (default: the shared pplug cache)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    p.add_argument("--expose-soft-prompts", action="store_true", help="replies carry each input's soft prompt (debug)")
    p.add_argument("--hub", default=None, help="a LoRA hub: every request's user also gets their retrieved adapters "
                                               "(pplug+lora-hub; the checkpoint must be a pplug one)")
    p.set_defaults(handler=commands.run_serve)


def _add_embed_user(sub) -> None:
    p = sub.add_parser("embed-user", help="privacy mode: a user vector from local history (the history stays here)")
    p.add_argument("--checkpoint", required=True, help="run or checkpoint folder (only its config is read)")
    p.add_argument("--history", required=True, help="JSON list of profile items, JSON lines, or - for stdin")
    p.add_argument("--out", required=True, help="the user vector JSON to write")
    p.add_argument("--task", default=None, help="task of the items (default: the checkpoint's)")
    p.set_defaults(handler=commands.run_embed_user)


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
