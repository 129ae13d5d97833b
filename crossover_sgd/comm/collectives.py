"""Bucketed collectives over a model's tensors (one collective per dtype, not per tensor)."""

from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
from torch import nn

from crossover_sgd.comm.flat import FlatParams
from crossover_sgd.comm.stats import CommStats, ring_allreduce_bytes

__all__ = ["model_state_tensors", "broadcast_model", "average_tensors"]


def model_state_tensors(model: nn.Module, buffers: bool = True) -> List[torch.Tensor]:
    """Parameters, then floating-point buffers (BatchNorm statistics), in a fixed order."""
    tensors: List[torch.Tensor] = list(model.parameters())
    if buffers:
        tensors += [b for b in model.buffers() if b.is_floating_point()]
    return tensors


def broadcast_model(model: nn.Module, src: int = 0) -> None:
    """Make every rank's parameters and buffers equal to rank ``src``'s."""
    if dist.get_world_size() == 1:
        return
    flat = FlatParams([t for t in model.state_dict().values() if torch.is_tensor(t)])
    for buf in flat.pack():
        dist.broadcast(buf, src)
    flat.unpack()


def average_tensors(flat: FlatParams, stats: CommStats) -> None:
    """All-reduce-average the tensors behind ``flat`` and count the traffic in ``stats``."""
    world = dist.get_world_size()
    if world == 1:
        return
    with stats.timed():
        works = [dist.all_reduce(buf, async_op=True) for buf in flat.pack()]
        for work in works:
            work.wait()
        for buf in flat.buffers.values():
            buf.div_(world)
        flat.unpack()
    volume = ring_allreduce_bytes(flat.nbytes, world)
    stats.add(volume, volume)
