"""The `pplug` command line is built from its table: every verb is there, named after its path, and each verb's
typed signature and docstring give flags with dashes and help; `pplug --help` stays light."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import subprocess
import sys
import typing
from collections.abc import Sequence
from typing import Annotated, Literal

import pytest

from pplug.cli.main import COMMANDS, main
from pplug.cli.signatures import Flag, Group, add_parameters, call_verb

# every verb `pplug` users have, nested ones as their path
VERBS = {
    ("download",), ("synth",), ("score",),
    ("user", "create"), ("user", "add-history"), ("user", "show"), ("user", "list"), ("user", "generate"),
    ("adapt",), ("hub", "train"), ("hub", "retrieve"), ("hub", "retrain"),
    ("generate",), ("explain",), ("evaluate",), ("prefs", "train"), ("serve",), ("embed-user",),
}


def table_verbs(table=COMMANDS, path=()) -> dict[tuple[str, ...], typing.Callable]:
    verbs = {}
    for name, entry in table.items():
        if isinstance(entry, Group):
            verbs |= table_verbs(entry.verbs, (*path, name))
        else:
            verbs[(*path, name)] = entry
    return verbs


def flag_names(verb) -> list[str]:
    """The dash-form flags of a verb's keyword parameters, a dataclass parameter's fields among them."""
    names = []
    for name, hint in typing.get_type_hints(verb).items():
        if name == "return" or inspect.signature(verb).parameters[name].kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        fields = [f.name for f in dataclasses.fields(hint)] if dataclasses.is_dataclass(hint) else [name]
        names += ["--" + f.replace("_", "-") for f in fields]
    return names


def test_the_table_holds_every_verb_each_named_after_its_path():
    verbs = table_verbs()
    assert set(verbs) == VERBS
    for path, verb in verbs.items():
        assert verb.__name__ == "_".join(path).replace("-", "_"), path


@pytest.mark.parametrize("path", sorted(VERBS), ids=" ".join)
def test_each_verbs_help_lists_its_flags(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    for flag in flag_names(table_verbs()[path]):
        assert f"{flag} " in shown or f"{flag}\n" in shown, (path, flag)
    assert "_" not in "".join(f for f in shown.split() if f.startswith("--"))  # no --time_based


def test_help_imports_neither_torch_nor_lightning():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pplug.cli", "--help"], capture_output=True,
                            text=True, check=True)
    assert "usage: pplug" in result.stdout
    heavy = [line for line in result.stderr.splitlines() if any(m in line for m in ("torch", "lightning",
                                                                                     "transformers"))]
    assert not heavy, heavy


seen: list[tuple] = []  # what `_demo` was called with


@dataclasses.dataclass(frozen=True)
class Speed:
    """how fast

    Attributes:
        pace: steps per second
    """

    pace: float = 1.0


def _demo(name: str, *, dry_run: bool = False, kind: Literal["a", "b"] = "a", sizes: Sequence[int] = (1, 2),
          tags: Annotated[Sequence[str], Flag(nargs="*", metavar="TAG")] = (), out: str,
          text: Annotated[str | None, Flag(one_of="source")] = None,
          file: Annotated[str | None, Flag(one_of="source")] = None, speed: Speed = Speed()) -> None:
    """run the demo

    Args:
        name: who runs it
        dry_run: print, do nothing
        kind: which one
        sizes: how many, several
        tags: labels, maybe none
        out: where it goes
        text: the input itself
        file: the input's file
    """
    seen.append((name, dry_run, kind, sizes, tags, out, text, file, speed))


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    add_parameters(parser, _demo)
    parser.set_defaults(verb=_demo)
    return parser


def test_a_signature_gives_the_flags_and_a_call_gets_typed_values():
    parser = _demo_parser()
    call_verb(parser.parse_args(["me", "--out", "o", "--text", "hi", "--dry-run", "--kind", "b", "--sizes", "3",
                                 "4", "--tags", "--pace", "2.5"]))
    assert seen.pop() == ("me", True, "b", [3, 4], [], "o", "hi", None, Speed(pace=2.5))
    call_verb(parser.parse_args(["me", "--out", "o", "--file", "f"]))
    assert seen.pop() == ("me", False, "a", (1, 2), (), "o", None, "f", Speed())
    usage = parser.format_help()
    assert "(--text TEXT | --file FILE)" in usage and "[--tags [TAG ...]]" in usage and "how fast:" in usage
    for refused in (["me", "--out", "o"],                                  # --text or --file is required
                    ["me", "--file", "f"],                                 # --out is required
                    ["me", "--out", "o", "--file", "f", "--kind", "c"],    # not a choice
                    ["me", "--out", "o", "--text", "t", "--file", "f"]):   # not both
        with pytest.raises(SystemExit):
            parser.parse_args(refused)


def test_an_undocumented_parameter_is_refused_when_the_parser_is_built():
    def verb(*, documented: int = 0, forgotten: int = 0) -> None:
        """a verb

        Args:
            documented: has help
        """

    with pytest.raises(TypeError, match="forgotten"):
        add_parameters(argparse.ArgumentParser(), verb)
