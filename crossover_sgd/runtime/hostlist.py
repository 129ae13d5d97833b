"""Slurm host list and tasks-per-node expansion (``node[01-03,07],gpu5`` -> names).

A malformed value is bad input from the environment: :class:`~crossover_sgd.errors.ConfigError`
(a ``ValueError``), one line naming the variable and its value, exit code 2 at the command line.
"""

from __future__ import annotations

import re
from typing import Optional

from crossover_sgd.errors import ConfigError

__all__ = ["expand_hostlist", "expand_tasks_per_node"]

_HOSTLIST_FORM = "expected host names and bracketed ranges such as node[01-04,07],gpu5"
_TASKS_FORM = "expected counts such as 4 or 2(x3),1"


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("']' before '['")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_one(pattern: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end():]
    names = []
    for item in match.group(1).split(","):
        bounds = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if bounds is None or (bounds.group(2) is not None and int(bounds.group(2)) < int(bounds.group(1))):
            raise ValueError(f"bad range [{match.group(1)}]")
        if "-" in item:
            lo, hi = item.split("-", 1)
            width = len(lo)
            names += [f"{head}{i:0{width}d}" for i in range(int(lo), int(hi) + 1)]
        else:
            names.append(head + item)
    return [n for name in names for n in _expand_one(name + tail)]


def expand_hostlist(hostlist: str, variable: Optional[str] = None) -> list[str]:
    """Expand a Slurm host list: ``"a[1-3],b07"`` -> ``["a1", "a2", "a3", "b07"]``.

    Zero padding is kept (``n[08-10]`` -> ``n08 n09 n10``), as ``scontrol show hostnames`` does.
    ``variable``: the environment variable the list came from, named in the error.
    """
    try:
        if hostlist.count("[") != hostlist.count("]"):
            raise ValueError("unbalanced brackets")
        return [name for part in _split_top_level(hostlist.strip()) for name in _expand_one(part)]
    except ValueError as exc:
        where = f"{variable}={hostlist!r}" if variable else repr(hostlist)
        raise ConfigError(f"malformed Slurm host list {where}: {exc}; {_HOSTLIST_FORM}") from None


def expand_tasks_per_node(spec: str, variable: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """Expand ``SLURM_TASKS_PER_NODE``: ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ConfigError(f"malformed {variable}={spec!r}: {part!r} is not a count; {_TASKS_FORM}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts
