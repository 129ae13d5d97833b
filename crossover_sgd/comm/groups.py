"""Process groups of rank subsets (nodes, LARS norm groups), created the way torch requires.

``torch.distributed.new_group`` is collective: every rank of the world must call it for every
group, members or not, in the same order, or ranks disagree on which group is which. The helpers
here do that, so a caller only says which partition it wants and gets back its own part.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch.distributed as dist

__all__ = ["partition_group", "consecutive_group", "group_ranks"]


def partition_group(parts: Sequence[Sequence[int]], rank: int) -> dist.ProcessGroup:
    """The process group of the part of ``parts`` holding ``rank``.

    Collective: every rank must call it with the same ``parts`` (a partition of the world's ranks).
    Every rank creates every part's group, in the order of ``parts``; a part of one rank gets a
    group of its own too (a one-rank group: the helpers of :mod:`~crossover_sgd.comm.collectives`
    skip communication on it). A single part holding the whole world is the world group itself
    (no new group).
    """
    world = dist.get_world_size()
    parts = [sorted(int(r) for r in part) for part in parts]
    flat = sorted(r for part in parts for r in part)
    if flat != list(range(world)):
        raise ValueError(f"the groups {parts} are not a partition of the ranks 0..{world - 1}")
    if len(parts) == 1:
        return dist.group.WORLD
    groups = [dist.new_group(part) for part in parts]  # all ranks, every group, same order
    return next(group for group, part in zip(groups, parts) if rank in part)


def consecutive_group(rank: int, world_size: int, size: int) -> dist.ProcessGroup:
    """The process group of the ``size`` consecutive ranks holding ``rank``: ranks
    ``[k * size, (k + 1) * size)`` with ``k = rank // size``.

    Collective (see :func:`partition_group`): every rank calls it with the same ``size``.
    ``size == world_size``: the world group (no new group); ``size == 1``: a one-rank group per
    rank (every rank still creates all of them). ``size`` must divide ``world_size`` (ValueError).
    """
    if size < 1 or world_size % size:
        raise ValueError(f"a group size of {size} does not divide the world size {world_size}")
    if world_size != dist.get_world_size():
        raise ValueError(f"world size {world_size} given, but the process group has {dist.get_world_size()} ranks")
    return partition_group([range(start, start + size) for start in range(0, world_size, size)], rank)


def group_ranks(group: Optional[dist.ProcessGroup] = None) -> List[int]:
    """The world ranks of ``group`` (None: the world), in group-rank order."""
    if group is None or group is dist.group.WORLD:
        return list(range(dist.get_world_size()))
    return list(dist.get_process_group_ranks(group))
