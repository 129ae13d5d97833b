"""The tensors a server shard holds and how both sides view them: the model's state, flat views,
the digest that checks copies are identical, and the run's two-rank groups."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List

import torch
from torch import nn

from crossover_sgd.comm.edges import edge_groups
from crossover_sgd.errors import ConfigError

__all__ = ["model_state", "state_digest", "ps_groups", "flat_views"]


def model_state(model: nn.Module) -> tuple:
    """The tensors a server holds: the parameters and the floating buffers, in model order."""
    params = list(model.parameters())
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    if len({t.dtype for t in params + buffers}) > 1:
        raise ConfigError("the parameter-server family needs the model's parameters and buffers in one dtype")
    return params, buffers


def state_digest(flat: torch.Tensor) -> int:
    """A 48-bit digest of ``flat``'s bytes (exact in a float64 header): equal digests mean
    bit-identical tensors, for all practical purposes."""
    data = flat.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=6).digest(), "big")


def ps_groups(shards: int, workers: List[int], rank: int, timeout_s: float, extra: List[int] = ()) -> Dict[int, Any]:
    """The two-rank Gloo groups of a run (every rank calls this in the same order): each worker
    with each shard, shard 0 with every other shard, and each rank of ``extra`` (a coordinator)
    with every shard and every worker. Returns this rank's, by peer."""
    edges = [(s, w) for s in range(shards) for w in workers] + [(0, s) for s in range(1, shards)]
    edges += [(e, peer) for e in extra for peer in list(range(shards)) + list(workers)]
    return edge_groups(edges, rank, timeout_s=timeout_s)


def flat_views(flat: torch.Tensor, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
    """Views of ``flat`` shaped like ``tensors``, in order."""
    views, offset = [], 0
    for t in tensors:
        views.append(flat[offset:offset + t.numel()].view(t.shape))
        offset += t.numel()
    return views
