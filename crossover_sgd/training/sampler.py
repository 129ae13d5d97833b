"""Each rank's shard of the training set, reshuffled every epoch, resumable mid-epoch."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ShardSampler"]


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``n`` reads positions ``r, r+n, r+2n, ...`` of one shared permutation.

    The permutation depends only on ``(seed, epoch)``, so all ranks agree without talking, and
    the union of the ranks' k-th batches of size b is the k-th batch of size ``n*b`` that a
    single process would read. The epoch's tail is cut so every rank reads the same number of
    samples, a multiple of ``chunk`` (batch size x accumulation steps): every optimizer step is
    complete. ``set_epoch(epoch, skip)`` starts after the first ``skip`` samples (resume).
    """

    def __init__(self, dataset_len: int, rank: int, world_size: int, *, seed: int = 0,
                 shuffle: bool = True, chunk: int = 1):
        self.dataset_len, self.rank, self.world_size = dataset_len, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.per_rank = (dataset_len // world_size) // chunk * chunk
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.dataset_len, generator=generator)
        else:
            order = torch.arange(self.dataset_len)
        mine = order[self.rank: self.per_rank * self.world_size: self.world_size]
        return iter(mine[self.skip:].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.skip
