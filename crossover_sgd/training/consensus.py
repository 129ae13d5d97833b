"""The consensus (averaged) model of differing replicas, and how far the replicas are from it."""

from __future__ import annotations

import copy
from typing import Tuple

import torch
import torch.distributed as dist
from torch import nn

from crossover_sgd.comm import FlatParams, model_state_tensors

__all__ = ["consensus_model"]


@torch.no_grad()
def consensus_model(model: nn.Module) -> Tuple[nn.Module, float]:
    """(a copy of ``model`` holding the average over ranks of parameters and floating-point
    buffers, the consensus distance ``(1/n) sum_i ||x_i - mean||^2`` over the parameters).

    Collective: every rank must call it.
    """
    world = dist.get_world_size()
    average = copy.deepcopy(model)
    flat = FlatParams(model_state_tensors(average))
    for buf in flat.pack():
        dist.all_reduce(buf)
        buf.div_(world)
    flat.unpack()
    local = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    for mine, mean in zip(model.parameters(), average.parameters()):
        local += (mine.double() - mean.double()).pow(2).sum()
    dist.all_reduce(local)
    return average, float(local) / world
