"""The `pplug` command line: `COMMANDS`, the table of verb -> typed function, and `main`, which parses the
command line with the parser built from that table, runs the verb and shows a user's mistake as one line.

Each verb's signature and docstring are its flags and their help (`pplug.cli.signatures` builds the parsers);
the verbs live by theme in `data`, `users`, `hub`, `models` and `serve`, and import what they run inside
their bodies, so `pplug --help` imports neither torch nor Lightning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from pplug.cli import data, hub, models, serve, users
from pplug.cli.commands import CLIError
from pplug.cli.signatures import Group, Verb, add_verbs, call_verb

# in the order of `pplug --help`
COMMANDS: Mapping[str, Verb | Group] = {
    # data: LaMP files, synthetic sets, scoring
    "download": data.download,
    "synth": data.synth,
    "score": data.score,
    # life-long: users of a store, adaptation, the LoRA hub
    "user": Group("users of a personalization store: persona, history, generation", {
        "create": users.user_create,
        "add-history": users.user_add_history,
        "show": users.user_show,
        "list": users.user_list,
        "generate": users.user_generate,
    }),
    "adapt": users.adapt,
    "hub": Group("LoRA hub: one adapter per group of similar users, retrieved by persona text", {
        "train": hub.hub_train,
        "retrieve": hub.hub_retrieve,
        "retrain": hub.hub_retrain,
    }),
    # the model: generation, evaluation, the preference models of reward-mbr decoding
    "generate": models.generate,
    "explain": models.explain,
    "evaluate": models.evaluate,
    "prefs": Group("facet preference models (length, formality, topic) for reward-mbr decoding", {
        "train": models.prefs_train,
    }),
    # serving
    "serve": serve.serve,
    "embed-user": serve.embed_user,
}

# what a user can fix, shown as one line without a traceback (pplug's own errors are ValueErrors:
# CheckpointError, LaMPDataError, StoreError, PersonaError, ...)
USER_ERRORS = (CLIError, ValueError, FileNotFoundError, FileExistsError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, one subparser per verb of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="pplug",
        description="Personalize a frozen LLM with a PPlug user embedder: LaMP data, scoring, evaluation, "
        "generation, users and adaptation.",
    )
    add_verbs(parser.add_subparsers(dest="command", required=True), COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`pplug ...`: 0 when the verb ran, 2 with `pplug <command>: error: <message>` on stderr when it refused."""
    args = build_parser().parse_args(argv)
    try:
        call_verb(args)
    except USER_ERRORS as e:
        print(f"pplug {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
