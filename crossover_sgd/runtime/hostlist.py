"""Slurm host list and tasks-per-node expansion (``node[01-03,07],gpu5`` -> names)."""

from __future__ import annotations

import re

__all__ = ["expand_hostlist", "expand_tasks_per_node"]


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"malformed Slurm host list {text!r}: ']' before '['")
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
            raise ValueError(f"malformed Slurm host list range [{match.group(1)}] in {pattern!r}")
        if "-" in item:
            lo, hi = item.split("-", 1)
            width = len(lo)
            names += [f"{head}{i:0{width}d}" for i in range(int(lo), int(hi) + 1)]
        else:
            names.append(head + item)
    return [n for name in names for n in _expand_one(name + tail)]


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm host list: ``"a[1-3],b07"`` -> ``["a1", "a2", "a3", "b07"]``.

    Zero padding is kept (``n[08-10]`` -> ``n08 n09 n10``), as ``scontrol show hostnames`` does.
    """
    if hostlist.count("[") != hostlist.count("]"):
        raise ValueError(f"malformed Slurm host list {hostlist!r}: unbalanced brackets")
    return [name for part in _split_top_level(hostlist.strip()) for name in _expand_one(part)]


def expand_tasks_per_node(spec: str) -> list[int]:
    """Expand ``SLURM_TASKS_PER_NODE``: ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ValueError(f"malformed SLURM_TASKS_PER_NODE {spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts
