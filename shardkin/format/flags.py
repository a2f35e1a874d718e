"""``shardkin build``'s flags, made from the option fields of :mod:`.options`: a field's
metadata gives its help text, spelling, choices and group title, and its type how the
flag's text is read (a tuple: a comma-separated list), so a new option gets its flag by
being declared."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from types import UnionType
from typing import Any, NamedTuple, get_args, get_origin, get_type_hints

from .options import option_groups


class Flag(NamedTuple):
    """One ``shardkin build`` flag: its group title, spelling, option name and the other
    arguments of ``argparse``'s ``add_argument`` (help, default, type, choices, action)."""

    title: str
    flag: str
    dest: str
    kwargs: dict[str, Any]


def command_line() -> list[Flag]:
    """The ``shardkin build`` flag of every option that has one, in ``--help``'s order."""
    flags = []
    for group in option_groups().values():
        hints = get_type_hints(group)
        for f in fields(group):
            meta = f.metadata
            if meta["help"] is None:
                continue
            kwargs: dict[str, Any] = {"help": meta["help"], "default": f.default}
            if hints[f.name] is bool:
                kwargs["action"] = "store_false" if f.default else "store_true"
            elif meta["choices"]:
                kwargs["choices"] = meta["choices"]
            elif (parse := _parser(hints[f.name])) is not None:
                kwargs["type"] = parse
            flags.append(Flag(meta["title"] or group.TITLE,
                              meta["flag"] or "--" + f.name.replace("_", "-"), f.name, kwargs))
    return flags


def comma_list(text: str) -> list[str]:
    """``'a, b,,c'`` -> ``['a', 'b', 'c']``: how flags take lists."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser(hint: Any) -> Callable[[str], Any] | None:
    """How a flag's text becomes the value of a field of type ``hint`` (None: as text)."""
    base = next(a for a in (get_args(hint) if isinstance(hint, UnionType) else (hint,))
                if a is not type(None))
    if get_origin(base) is tuple:
        return comma_list
    return base if base in (int, float) else None
