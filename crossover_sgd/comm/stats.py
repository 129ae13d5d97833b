"""Traffic accounting: bytes a rank sends and receives and seconds it spends communicating."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Dict, Iterator

__all__ = ["CommStats", "ring_allreduce_bytes"]


def ring_allreduce_bytes(payload_bytes: int, world_size: int) -> int:
    """Bytes one rank sends (and receives) in a ring all-reduce: ``2 (n-1)/n`` of the payload."""
    if world_size <= 1:
        return 0
    return (2 * (world_size - 1) * payload_bytes) // world_size


@dataclass
class CommStats:
    """Running totals of one rank's communication since the start of training.

    ``seconds`` is wall time spent inside the algorithm's communication calls (for overlapped
    collectives: from launch to completion of each one).
    """

    bytes_sent: int = 0
    bytes_recv: int = 0
    seconds: float = 0.0
    rounds: int = 0

    def add(self, sent: int, recv: int, seconds: float = 0.0) -> None:
        self.bytes_sent += int(sent)
        self.bytes_recv += int(recv)
        self.seconds += float(seconds)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``seconds``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)

    def load(self, state: Dict[str, float]) -> None:
        self.bytes_sent, self.bytes_recv = int(state["bytes_sent"]), int(state["bytes_recv"])
        self.seconds, self.rounds = float(state["seconds"]), int(state["rounds"])
