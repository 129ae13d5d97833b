"""The collectives of the training loop, over the training group (the ranks whose role is
``trainer``), or none at all for a family that goes on after losing a peer.

Evaluation, checkpoints and the run's summary go through a :class:`TrainingGroup`, never through
world-wide collectives: a dedicated server or coordinator rank takes no part, and with
``collectives=False`` (``Algorithm.group_collectives``) each trainer works alone: barriers
return at once, sums are this trainer's own, a gather holds this trainer's item.
"""

from __future__ import annotations

from typing import Any, List

import torch
import torch.distributed as dist

from crossover_sgd.comm import total
from crossover_sgd.runtime.process_group import DistContext

__all__ = ["TrainingGroup"]


class TrainingGroup:
    """Barrier, sum and gather over the trainers of ``ctx`` (or this trainer alone)."""

    def __init__(self, ctx: DistContext, collectives: bool = True):
        self.ctx, self.collectives = ctx, collectives
        self.handle = ctx.train_group  # None: the world
        self.size = ctx.train_size if collectives else 1
        self.rank = ctx.train_rank if collectives else 0

    @property
    def is_main(self) -> bool:
        """The trainer that writes what the group shares."""
        return self.ctx.is_main

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier(group=self.handle)

    def sum_(self, tensor: torch.Tensor, what: str) -> None:
        """Sum ``tensor`` over the group, in place."""
        if self.size > 1:
            total([tensor], group=self.handle, what=what)

    def gather_objects(self, item: Any) -> List[Any]:
        """Every trainer's ``item``, in training-rank order (this trainer's alone without collectives)."""
        if self.size == 1:
            return [item]
        items: List[Any] = [None] * self.size
        dist.all_gather_object(items, item, group=self.handle)
        return items
