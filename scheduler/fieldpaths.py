"""How bad input is named: field paths (``queues[2].quota.H100``) and values as a user wrote
them, so every error says which field, which value and why."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence

from scheduler.catalog import Catalog

__all__ = [
    "already_used",
    "did_you_mean",
    "join",
    "json_sentence",
    "not_a_mig_profile",
    "repeats",
    "show",
    "unknown_model",
]

_BARE_KEY = re.compile(r"[A-Za-z0-9_\-/+]+\Z")


def join(prefix: str, *parts: object) -> str:
    """``join("queues[2]", "quota", "H100")`` → ``queues[2].quota.H100``."""
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _BARE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def repeats(names: Sequence[Hashable]) -> list[tuple[int, int]]:
    """(index, index of its first use) for every name used before."""
    first: dict[Hashable, int] = {}
    return [(i, first[n]) for i, n in enumerate(names) if first.setdefault(n, i) != i]


def already_used(section: str, names: Sequence[str], field: str = "name") -> list[str]:
    return [
        f"{section}[{i}].{field}: {names[i]!r} is already used by {section}[{j}]"
        for i, j in repeats(names)
    ]


def did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_model(name: str, catalog: Catalog) -> str:
    return f"{name!r} is not a known GPU model (known: {', '.join(catalog.names())})"


def not_a_mig_profile(name: str, profiles: Iterable[str]) -> str:
    """Why ``name`` is no MIG profile (of ``profiles``, every model's), said after the
    value: a snapshot's demand and a trace's cell word it alike."""
    return f"is not a MIG profile of any known GPU model{did_you_mean(name, profiles)}"


def json_sentence(message: str) -> str:
    """json's message as a sentence of its own: a few end in 'at' ('Unterminated string
    starting at'), which its ': line 2 column 14 (char 40)' completed; the readers give the
    place themselves, and the sentence read cut off."""
    return message.removesuffix(" at") + " here" if message.endswith(" at") else message
