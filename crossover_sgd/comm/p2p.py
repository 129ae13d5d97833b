"""Batched point-to-point exchange: all sends and receives of a round issued at once.

Every message of a round goes out in one ``batch_isend_irecv`` (no per-segment barrier); the
caller waits for all of them. A peer that died or stopped answering surfaces as a
:class:`~crossover_sgd.errors.PeerError` naming the peers of the failed round, raised within the
process group's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.distributed as dist

from crossover_sgd.comm.stats import CommStats
from crossover_sgd.errors import PeerError

__all__ = ["Message", "exchange"]


@dataclass(frozen=True)
class Message:
    """One tensor to send to (or receive from) ``peer``; ``tag`` tells messages of one pair apart."""

    peer: int
    tensor: torch.Tensor
    tag: int = 0


def exchange(sends: Sequence[Message], recvs: Sequence[Message], stats: CommStats, what: str = "gossip") -> None:
    """Post every send and receive at once, wait for all, count bytes and seconds in ``stats``."""
    if not sends and not recvs:
        return
    ops: List[dist.P2POp] = [dist.P2POp(dist.isend, m.tensor, m.peer, tag=m.tag) for m in sends]
    ops += [dist.P2POp(dist.irecv, m.tensor, m.peer, tag=m.tag) for m in recvs]
    peers = sorted({m.peer for m in sends} | {m.peer for m in recvs})
    with stats.timed():
        try:
            for request in dist.batch_isend_irecv(ops):
                request.wait()
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PeerError(f"{what} with peer rank(s) {peers} failed on rank {dist.get_rank()}: "
                            f"a peer died or stopped answering ({first[:200]})") from exc
    stats.add(sum(m.tensor.numel() * m.tensor.element_size() for m in sends),
              sum(m.tensor.numel() * m.tensor.element_size() for m in recvs))
