"""LARS norm synchronisation over groups of consecutive ranks (``--sync-lars-group-size``).

From ``--sync-lars-start-epoch`` on, the trust ratios use the norms of the *sum* over the group of
the weights and of the gradients, ``||sum_g w||`` and ``||sum_g grad||``: one bucketed all-reduce
of all LARS weights and gradients per step inside the group (not one per tensor), installed as
the optimizer's norm hook (:meth:`lars.LARS.set_norm_hook`).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.distributed as dist

from crossover_sgd.comm import CommStats, FlatParams, ring_allreduce_bytes
from crossover_sgd.config import divides_world_error

__all__ = ["GroupNormSync"]


class GroupNormSync:
    """A LARS norm hook returning the squared norms of the group sums of weights and gradients."""

    def __init__(self, optimizer, world_size: int, rank: int, group_size: int, stats: CommStats):
        if group_size < 1 or world_size % group_size:
            raise divides_world_error("--sync-lars-group-size", group_size, world_size)
        self.optimizer, self.group_size, self.stats = optimizer, group_size, stats
        groups = [dist.new_group(list(range(start, start + group_size)))  # every rank creates every group
                  for start in range(0, world_size, group_size)]
        self.group = groups[rank // group_size]

    def __call__(self, weight_sq: torch.Tensor, grad_sq: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        params: List[torch.Tensor] = self.optimizer.lars_parameters()
        tensors = [p.detach() for p in params] + [p.grad.detach() for p in params]
        flat = FlatParams(tensors)
        with self.stats.timed():
            for buf in flat.pack():
                dist.all_reduce(buf, group=self.group)
        volume = ring_allreduce_bytes(flat.nbytes, self.group_size)
        self.stats.add(volume, volume)
        sums, offsets = [], {}
        for tensor in tensors:  # views of the summed buffers, in the hook's order
            start = offsets.get(tensor.dtype, 0)
            sums.append(flat.buffers[tensor.dtype][start:start + tensor.numel()])
            offsets[tensor.dtype] = start + tensor.numel()
        norms = torch.stack(torch._foreach_norm(sums)).to(weight_sq.dtype).square()
        k = len(params)
        return norms[:k].to(weight_sq.device), norms[k:].to(grad_sq.device)
