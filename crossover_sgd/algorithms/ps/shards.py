"""How the model's tensors are split over the server shards: whole tensors, balanced by bytes.

``--ps-shards S`` puts each tensor on one shard (a tensor is never cut, so a shard's quantizer
sees whole tensors and its norms do not depend on S). The split is the greedy
longest-processing-time rule: tensors in decreasing size go to the shard holding the fewest bytes
so far (ties: the lower shard). It is deterministic, so every rank computes the same split, and its
largest shard is at most 4/3 of the best possible. Within a shard the tensors keep model order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

from crossover_sgd.errors import ConfigError

__all__ = ["ShardLayout", "check_shards", "split_by_bytes"]


def check_shards(shards: int, tensors: int) -> None:
    """Refuse a shard count the model's ``tensors`` parameter tensors cannot fill."""
    if shards < 1:
        raise ConfigError(f"{{ps_shards}} {shards} is invalid: use an integer >= 1")
    if shards > tensors:
        raise ConfigError(f"{{ps_shards}} {shards} exceeds the model's {tensors} parameter tensors: a tensor is "
                          f"never split, so use at most {tensors} shards")


def split_by_bytes(nbytes: Sequence[int], shards: int) -> List[List[int]]:
    """The tensor indices of each of ``shards`` shards (each in increasing order)."""
    load = [0] * shards
    members: List[List[int]] = [[] for _ in range(shards)]
    for index in sorted(range(len(nbytes)), key=lambda i: (-nbytes[i], i)):
        target = min(range(shards), key=lambda s: (load[s], s))
        load[target] += nbytes[index]
        members[target].append(index)
    return [sorted(m) for m in members]


@dataclass(frozen=True)
class ShardLayout:
    """The split of a model's state (parameters, then floating buffers) over the shards.

    ``params[s]``/``buffers[s]``: indices into the model's parameter and floating-buffer lists
    held by shard ``s``. ``param_sizes[s]``: the element counts of those parameters, in order
    (the segments of shard ``s``'s flat parameter message)."""

    params: Tuple[Tuple[int, ...], ...]
    buffers: Tuple[Tuple[int, ...], ...]
    param_sizes: Tuple[Tuple[int, ...], ...]
    buffer_sizes: Tuple[Tuple[int, ...], ...]

    @property
    def shards(self) -> int:
        return len(self.params)

    def numel(self, shard: int) -> int:
        return sum(self.param_sizes[shard])

    def buffer_numel(self, shard: int) -> int:
        return sum(self.buffer_sizes[shard])

    @classmethod
    def of(cls, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], shards: int) -> "ShardLayout":
        check_shards(shards, len(params))
        tensors = list(params) + list(buffers)
        split = split_by_bytes([t.numel() * t.element_size() for t in tensors], shards)
        n = len(params)
        p = tuple(tuple(i for i in m if i < n) for m in split)
        b = tuple(tuple(i - n for i in m if i >= n) for m in split)
        return cls(p, b, tuple(tuple(params[i].numel() for i in m) for m in p),
                   tuple(tuple(buffers[i].numel() for i in m) for m in b))
