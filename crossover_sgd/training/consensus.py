"""The consensus (averaged) model of differing replicas, and how far the replicas are from it."""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from crossover_sgd.comm import FlatParams, average, model_state_tensors, total

__all__ = ["consensus_model"]


@torch.no_grad()
def consensus_model(model: nn.Module, group: Optional[dist.ProcessGroup] = None) -> Tuple[nn.Module, float]:
    """(a copy of ``model`` holding the average over ranks of parameters and floating-point
    buffers, the consensus distance ``(1/n) sum_i ||x_i - mean||^2`` over the parameters).

    Collective over ``group`` (None: the world): every rank of it must call it.
    """
    world = dist.get_world_size(group)
    mean_model = copy.deepcopy(model)
    average(FlatParams(model_state_tensors(mean_model)), group=group, what="consensus average")
    local = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    for mine, mean in zip(model.parameters(), mean_model.parameters()):
        local += (mine.double() - mean.double()).pow(2).sum()
    total([local], group=group, what="consensus distance")
    return mean_model, float(local) / world
