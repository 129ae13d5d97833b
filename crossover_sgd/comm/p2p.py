"""Batched point-to-point exchange: all sends and receives of a round issued at once.

Every message of a round goes out in one ``batch_isend_irecv`` (no per-segment barrier); the
caller waits for all of them at once, or part by part to use what has arrived while the rest
still travels. A peer that died or stopped answering surfaces as a
:class:`~crossover_sgd.errors.PeerError` naming the peers of the failed round, raised within the
process group's timeout (:func:`~crossover_sgd.comm.failure.peer_failure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from crossover_sgd.comm.failure import peer_failure
from crossover_sgd.comm.stats import CommStats

__all__ = ["Message", "Pending", "post"]


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
        # receives first: Gloo's TCP transport sends a message only once the peer has said it is
        # ready to receive it, and that notice queues behind what the peer is sending us; posted
        # sends-first, a pair's two directions took turns (a link-bound round: twice its link time,
        # measured on the emulated cluster, docs/results.md "Emulated cluster")
        ops = [dist.P2POp(dist.irecv, m.tensor, m.peer, tag=m.tag) for m in self.recvs]
        ops += [dist.P2POp(dist.isend, m.tensor, m.peer, tag=m.tag) for m in self.sends]
        requests = dist.batch_isend_irecv(ops) if ops else []
        self._open: Dict[int, Tuple[Message, bool, Any]] = {  # id(message) -> (message, is_send, request)
            id(m): (m, i >= len(self.recvs), r) for i, (m, r) in enumerate(zip(self.recvs + self.sends, requests))}

    def wait(self, stats: CommStats, messages: Optional[Iterable[Message]] = None) -> None:
        """Wait for ``messages`` (default: every message not waited for yet); add their bytes and
        the waiting time to ``stats``. Waiting for part of a round lets the caller use the parts
        that have arrived while the rest still travels."""
        keys = list(self._open) if messages is None else [id(m) for m in messages if id(m) in self._open]
        sent = received = 0
        with stats.timed(), peer_failure(self.what, self.peers):
            for key in keys:
                message, is_send, request = self._open.pop(key)
                request.wait()
                nbytes = message.tensor.numel() * message.tensor.element_size()
                sent, received = (sent + nbytes, received) if is_send else (sent, received + nbytes)
        stats.add(sent, received)


def post(sends: Sequence[Message], recvs: Sequence[Message], what: str = "gossip") -> Pending:
    """Post every send and receive at once (one ``batch_isend_irecv``); wait later."""
    return Pending(sends, recvs, what)

