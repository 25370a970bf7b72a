"""argparse parsers built from typed functions: a `pplug` verb declares its flags once, in its signature and
docstring, and no parser is wired by hand.

    def download(task: str, *, time_based: bool = False, split: Sequence[Split] = ("train", "dev")) -> None:
        '''fetch official LaMP files into lamp_data/<task>/ (needs internet)

        Args:
            task: LaMP_1 .. LaMP_7
            time_based: the time-based split (lamp_data/time/<task>/)
            split: splits to fetch (default: train dev)
        '''

is `pplug download task [--time-based] [--split {train,dev,test} [...]]`. A parameter before `*` is a
positional argument, one after it a flag named like it with dashes. The type converts the value (`str`, `int`,
`float`), makes a switch (`bool`, default False), gives choices (`Literal`) or takes several values
(`Sequence[...]`); the default is the flag's, and a flag without one is required. The docstring's first
paragraph is the verb's help, its `Args:` section each flag's. What a type cannot say goes in
`Annotated[..., Flag(...)]`, and a dataclass parameter adds its fields as a group of flags that several verbs
share, its docstring's first paragraph the group's title and its `Attributes:` the flags' help.

Why not jsonargparse's `CLI` (which litgpt's table feeds): its flags keep the parameter's underscores
(`--time_based`), a bool flag takes a value (`--time_based true`) and a list is written `--split '[dev, test]'`,
while the flags `pplug` users have are `--time-based`, `--overwrite` and `--split dev test`.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple, Union

Verb = Callable[..., None]


@dataclasses.dataclass(frozen=True)
class Flag:
    """What a parameter's type cannot say about its flag: `Annotated[Sequence[str], Flag(nargs="*")]`.

    Attributes:
        metavar: the value's name in the usage line (default: the flag's name in capitals)
        nargs: "*" lets a `Sequence` flag be given without values (default "+": one or more)
        one_of: exactly one of the verb's flags that share this name must be given
    """

    metavar: str | None = None
    nargs: str | None = None
    one_of: str | None = None


class Group(NamedTuple):
    """A verb of verbs (`pplug user` -> `pplug user create`, ...): its help and its own table."""

    help: str
    verbs: Mapping[str, Verb | Group]


def add_verbs(subparsers: Any, table: Mapping[str, Verb | Group]) -> None:
    """One subparser per entry of `table`, a Group's verbs under their own (dest `<group>_command`)."""
    for name, entry in table.items():
        if isinstance(entry, Group):
            parser = subparsers.add_parser(name, help=entry.help, description=entry.help)
            add_verbs(parser.add_subparsers(dest=f"{name}_command", required=True), entry.verbs)
        else:
            summary = docstring_summary(entry)
            parser = subparsers.add_parser(name, help=summary, description=summary)
            add_parameters(parser, entry)
            parser.set_defaults(verb=entry)


def call_verb(namespace: argparse.Namespace) -> None:
    """Run the verb a parsed command line names with its parameters' values (dataclass groups rebuilt)."""
    verb = namespace.verb
    hints = typing.get_type_hints(verb)
    arguments = {}
    for name in inspect.signature(verb).parameters:
        hint = hints[name]
        if _is_dataclass_type(hint):
            arguments[name] = hint(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(hint)})
        else:
            arguments[name] = getattr(namespace, name)
    verb(**arguments)


def add_parameters(parser: argparse.ArgumentParser, verb: Verb) -> None:
    """The arguments of `verb`'s parameters, in their order (TypeError: a type or docstring it cannot read)."""
    hints = typing.get_type_hints(verb, include_extras=True)
    helps = docstring_entries(verb, "Args:")
    either: dict[str, Any] = {}  # Flag.one_of -> its required mutually exclusive group
    for param in inspect.signature(verb).parameters.values():
        hint = hints[param.name]
        if _is_dataclass_type(hint):
            group = parser.add_argument_group(docstring_summary(hint))
            field_hints = typing.get_type_hints(hint, include_extras=True)
            field_helps = docstring_entries(hint, "Attributes:")
            for field in dataclasses.fields(hint):
                _add_argument(group, field.name, field_hints[field.name], field.default, field_helps, hint)
            continue
        container: Any = parser
        if one_of := _flag_of(hint).one_of:
            if one_of not in either:
                either[one_of] = parser.add_mutually_exclusive_group(required=True)
            container = either[one_of]
        positional = param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        _add_argument(container, param.name, hint, param.default, helps, verb, positional=positional)


def docstring_summary(documented: Any) -> str:
    """The first paragraph of a docstring, on one line: a verb's help, a dataclass group's title."""
    return " ".join(inspect.cleandoc(documented.__doc__ or "").split("\n\n")[0].split())


def docstring_entries(documented: Any, section: str) -> dict[str, str]:
    """name -> text of a Google-style docstring section (`Args:`, `Attributes:`), continuation lines joined."""
    lines = inspect.cleandoc(documented.__doc__ or "").splitlines()
    if section not in lines:
        return {}
    entries: dict[str, str] = {}
    name = None
    for line in lines[lines.index(section) + 1:]:
        if not line.startswith(" "):  # a blank or unindented line ends the section
            break
        if entry := re.fullmatch(r" {4}(\w+): (.*)", line):
            name = entry[1]
            entries[name] = entry[2]
        elif name is not None:
            entries[name] += " " + line.strip()
    return entries


def _add_argument(container: Any, name: str, hint: Any, default: Any, helps: dict[str, str], owner: Any,
                  positional: bool = False) -> None:
    if name not in helps:
        raise TypeError(f"{owner.__qualname__}: `{name}` has no docstring entry, the help of its flag")
    flag = _flag_of(hint)
    value_type, allows_none = _without_none(_without_annotated(hint))
    kwargs: dict[str, Any] = {"help": helps[name].replace("%", "%%")}  # argparse formats help with %
    if positional:
        if default is not inspect.Parameter.empty:
            raise TypeError(f"{owner.__qualname__}: positional `{name}` has a default (put it after `*`)")
        names = [name]
    else:
        names = ["--" + name.replace("_", "-")]
        kwargs["dest"] = name
        if default is inspect.Parameter.empty or default is dataclasses.MISSING:  # a parameter's, a field's
            kwargs["required"] = True
        else:
            kwargs["default"] = default
    if value_type is bool and not allows_none:
        if default is not False:
            raise TypeError(f"{owner.__qualname__}: `{name}` is a switch, so its default is False")
        kwargs["action"] = "store_true"
    elif typing.get_origin(value_type) in (list, Sequence):
        (item_type,) = typing.get_args(value_type)
        kwargs["nargs"] = flag.nargs or "+"
        kwargs.update(_value_kwargs(item_type, owner, name))
    else:
        kwargs.update(_value_kwargs(value_type, owner, name))
    if flag.metavar:
        kwargs["metavar"] = flag.metavar
    container.add_argument(*names, **kwargs)


def _value_kwargs(value_type: Any, owner: Any, name: str) -> dict[str, Any]:
    """type= (and choices=) of one value."""
    if typing.get_origin(value_type) is Literal:
        choices = list(typing.get_args(value_type))
        return {"type": type(choices[0]), "choices": choices}
    if value_type in (str, int, float):
        return {"type": value_type}
    raise TypeError(f"{owner.__qualname__}: `{name}` has a type the command line cannot read: {value_type!r}")


def _flag_of(hint: Any) -> Flag:
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Flag)), Flag())
    return Flag()


def _without_annotated(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _without_none(hint: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); any other type -> (it, False)."""
    if typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(hint):
        (rest,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest, True
    return hint, False


def _is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


__all__ = ["Flag", "Group", "Verb", "add_parameters", "add_verbs", "call_verb", "docstring_entries",
           "docstring_summary"]
