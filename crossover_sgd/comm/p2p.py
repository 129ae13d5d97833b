"""Batched point-to-point exchange: all sends and receives of a round issued at once.

Every message of a round goes out in one ``batch_isend_irecv`` (no per-segment barrier); the
caller waits for all of them. A peer that died or stopped answering surfaces as a
:class:`~crossover_sgd.errors.PeerError` naming the peers of the failed round, raised within the
process group's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from crossover_sgd.comm.stats import CommStats
from crossover_sgd.errors import PeerError

__all__ = ["Message", "Pending", "post", "exchange"]


@dataclass(frozen=True)
class Message:
    """One tensor to send to (or receive from) ``peer``; ``tag`` tells messages of one pair apart."""

    peer: int
    tensor: torch.Tensor
    tag: int = 0


class Pending:
    """Messages posted with :func:`post` and not yet waited for."""

    def __init__(self, sends: Sequence[Message], recvs: Sequence[Message], what: str):
        self.sends, self.recvs, self.what = list(sends), list(recvs), what
        self.peers = sorted({m.peer for m in self.sends} | {m.peer for m in self.recvs})
        ops = [dist.P2POp(dist.isend, m.tensor, m.peer, tag=m.tag) for m in self.sends]
        ops += [dist.P2POp(dist.irecv, m.tensor, m.peer, tag=m.tag) for m in self.recvs]
        self.requests = dist.batch_isend_irecv(ops) if ops else []

    def wait(self, stats: CommStats) -> None:
        """Wait for every message; add their bytes and the waiting time to ``stats``."""
        with stats.timed():
            try:
                for request in self.requests:
                    request.wait()
            except RuntimeError as exc:
                text = str(exc).strip()
                first = text.splitlines()[0] if text else type(exc).__name__
                raise PeerError(f"{self.what} with peer rank(s) {self.peers} failed on rank {dist.get_rank()}: "
                                f"a peer died or stopped answering ({first[:200]})") from exc
        stats.add(sum(m.tensor.numel() * m.tensor.element_size() for m in self.sends),
                  sum(m.tensor.numel() * m.tensor.element_size() for m in self.recvs))


def post(sends: Sequence[Message], recvs: Sequence[Message], what: str = "gossip") -> Pending:
    """Post every send and receive at once (one ``batch_isend_irecv``); wait later."""
    return Pending(sends, recvs, what)


def exchange(sends: Sequence[Message], recvs: Sequence[Message], stats: CommStats, what: str = "gossip") -> None:
    """Post every send and receive at once, wait for all, count bytes and seconds in ``stats``."""
    with stats.timed():
        pending = post(sends, recvs, what)
    pending.wait(stats)
