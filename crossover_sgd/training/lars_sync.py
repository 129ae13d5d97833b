"""LARS norm synchronisation over groups of consecutive ranks (setting ``sync_lars_group_size``).

From epoch ``sync_lars_start_epoch`` on, the trust ratios use the norms of the *sum* over the group of
the weights and of the gradients, ``||sum_g w||`` and ``||sum_g grad||``: one bucketed all-reduce
of all LARS weights and gradients per step inside the group (not one per tensor), installed as
the optimizer's norm hook (:meth:`lars.LARS.set_norm_hook`).
"""

from __future__ import annotations

from typing import List, Tuple

import torch

from crossover_sgd.comm import CommStats, FlatParams, consecutive_group, total
from crossover_sgd.errors import divides_world_error

__all__ = ["GroupNormSync"]


class GroupNormSync:
    """A LARS norm hook returning the squared norms of the group sums of weights and gradients."""

    def __init__(self, optimizer, world_size: int, rank: int, group_size: int, stats: CommStats):
        if group_size < 1 or world_size % group_size:
            raise divides_world_error("sync_lars_group_size", group_size, world_size)
        self.optimizer, self.group_size, self.stats = optimizer, group_size, stats
        self.group = consecutive_group(rank, world_size, group_size)  # collective: every rank creates every group

    def __call__(self, weight_sq: torch.Tensor, grad_sq: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        params: List[torch.Tensor] = self.optimizer.lars_parameters()
        tensors = [p.detach() for p in params] + [p.grad.detach() for p in params]
        flat = FlatParams(tensors)  # a copy: the sums must not overwrite the weights and gradients
        total(flat.pack(), group=self.group, stats=self.stats, what="LARS norm sum")
        sums, offsets = [], {}
        for tensor in tensors:  # views of the summed buffers, in the hook's order
            start = offsets.get(tensor.dtype, 0)
            sums.append(flat.buffers[tensor.dtype][start:start + tensor.numel()])
            offsets[tensor.dtype] = start + tensor.numel()
        norms = torch.stack(torch._foreach_norm(sums)).to(weight_sq.dtype).square()
        k = len(params)
        return norms[:k].to(weight_sq.device), norms[k:].to(grad_sq.device)
