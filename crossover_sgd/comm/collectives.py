"""Bucketed collectives over a model's tensors (one collective per dtype, not per tensor).

:func:`average` and :func:`total` are the one all-reduce of the package: over the world or a
process group (:mod:`~crossover_sgd.comm.groups`), in place, traffic and time counted in a
:class:`~crossover_sgd.comm.stats.CommStats`, a lost peer raised as a
:class:`~crossover_sgd.errors.PeerError` naming the group's ranks.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import List, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn

from crossover_sgd.comm.failure import peer_failure
from crossover_sgd.comm.flat import FlatParams
from crossover_sgd.comm.groups import group_ranks
from crossover_sgd.comm.stats import CommStats, ring_allreduce_bytes

__all__ = ["model_state_tensors", "broadcast_model", "average", "total"]

Tensors = Union[FlatParams, Sequence[torch.Tensor]]


def model_state_tensors(model: nn.Module, buffers: bool = True) -> List[torch.Tensor]:
    """Parameters, then floating-point buffers (BatchNorm statistics), in a fixed order."""
    tensors: List[torch.Tensor] = list(model.parameters())
    if buffers:
        tensors += [b for b in model.buffers() if b.is_floating_point()]
    return tensors


def broadcast_model(model: nn.Module, src: int = 0, group: Optional[dist.ProcessGroup] = None) -> None:
    """Make the parameters and buffers of every rank of ``group`` (None: the world) equal to rank
    ``src``'s (a rank of the world, member of the group)."""
    if dist.get_world_size(group) == 1:
        return
    flat = FlatParams([t for t in model.state_dict().values() if torch.is_tensor(t)])
    with peer_failure("broadcast of the initial model", group_ranks(group)):
        for buf in flat.pack():
            dist.broadcast(buf, src, group=group)
    flat.unpack()


def average(tensors: Tensors, *, group: Optional[dist.ProcessGroup] = None, stats: Optional[CommStats] = None,
            what: str = "average") -> None:
    """Replace ``tensors`` (a :class:`FlatParams` or a list of tensors) in place by their mean
    over the ranks of ``group`` (None: the world): the sum, then a division by the group's size.

    Collective over ``group``. One all-reduce per dtype buffer, all posted before the first wait.
    With ``stats``: bytes counted as a ring all-reduce over the group's size
    (:func:`ring_allreduce_bytes` of the payload, sent and received) and the wall time added. A
    peer lost during the all-reduce raises :class:`~crossover_sgd.errors.PeerError`
    ``"{what} with peer rank(s) [the group's ranks] failed on rank R: ..."``. A group of one rank
    (or no tensors): nothing happens, nothing is counted.
    """
    _all_reduce(tensors, group, stats, what, mean=True)


def total(tensors: Tensors, *, group: Optional[dist.ProcessGroup] = None, stats: Optional[CommStats] = None,
          what: str = "sum") -> None:
    """Replace ``tensors`` in place by their sum over the ranks of ``group``; otherwise as
    :func:`average`."""
    _all_reduce(tensors, group, stats, what, mean=False)


def _buffers(tensors: Tensors):
    """(the buffers to reduce, the FlatParams to unpack afterwards or None). A list holding one
    contiguous tensor per dtype (e.g. ``FlatParams.pack()``'s buffers) is reduced in place as it
    is; any other list is gathered into one flat buffer per dtype."""
    if isinstance(tensors, FlatParams):
        return tensors.pack(), tensors
    tensors = list(tensors)
    dtypes = [t.dtype for t in tensors]
    if len(set(dtypes)) == len(dtypes) and all(t.is_contiguous() for t in tensors):
        return tensors, None
    flat = FlatParams(tensors)
    return flat.pack(), flat


@torch.no_grad()
def _all_reduce(tensors: Tensors, group: Optional[dist.ProcessGroup], stats: Optional[CommStats], what: str,
                mean: bool) -> None:
    size = dist.get_world_size(group)
    if size < 1:
        raise ValueError(f"rank {dist.get_rank()} is not a member of the process group of the {what}")
    if size == 1 or (not isinstance(tensors, FlatParams) and len(tensors) == 0):
        return
    if mean:
        dtypes = tensors.buffers if isinstance(tensors, FlatParams) else {t.dtype for t in tensors}
        if not all(dtype.is_floating_point or dtype.is_complex for dtype in dtypes):
            raise ValueError(f"the {what} needs floating-point tensors, not {sorted(map(str, dtypes))}")
    with stats.timed() if stats is not None else nullcontext():
        buffers, flat = _buffers(tensors)
        with peer_failure(what, group_ranks(group)):
            works = [dist.all_reduce(buf, group=group, async_op=True) for buf in buffers]
            for work in works:
                work.wait()
        if mean:
            for buf in buffers:
                buf.div_(size)
        if flat is not None:
            flat.unpack()
    if stats is not None:
        volume = ring_allreduce_bytes(sum(buf.numel() * buf.element_size() for buf in buffers), size)
        stats.add(volume, volume)
