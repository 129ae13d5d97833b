"""Heartbeats: when communication fails, name the peer that died or stopped answering.

Every rank's daemon thread increments a counter ``crossover_sgd/hb/<rank>`` in the rendezvous
store once per ``interval`` seconds. When a collective or exchange fails, the failing rank marks
itself ``failed`` and compares two readings of all counters: a rank whose counter stopped and
that did not mark itself failed is *lost* (killed, crashed, or frozen). A rank frozen inside a
collective keeps its heartbeat: only the process-group timeout catches a slow-but-alive peer.

The thread must be joined (:meth:`Heartbeat.close`) before the interpreter exits: a daemon thread
still inside a store call (which releases the GIL) when Python finalizes is ended with
``pthread_exit`` as it takes the GIL back, and unwinding through the C++ frames aborts the whole
process ("terminate called without an active exception", exit -6) after a successful run.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Dict, List, Optional, Tuple

import torch.distributed as dist

__all__ = ["Heartbeat"]

_PREFIX = "crossover_sgd/hb/"
_FAILED = "crossover_sgd/failed/"
_DONE = "crossover_sgd/done/"


def _connect(host: str, port: int, connect_timeout: float, op_timeout: float) -> dist.TCPStore:
    store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=connect_timeout),
                          wait_for_workers=False)
    store.set_timeout(timedelta(seconds=op_timeout))
    return store


class Heartbeat:
    """A heartbeat thread for this rank, and the diagnosis of lost peers."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, interval: float = 0.5,
                 connect_timeout: float = 60.0, op_timeout: float = 10.0):
        """Connect to the rendezvous store (waiting up to ``connect_timeout`` seconds: with many
        ranks starting at once on few cores, the store's host may answer slowly); store
        operations then time out after ``op_timeout`` seconds, so a diagnosis is quick."""
        self.rank, self.world_size, self.interval = rank, world_size, interval
        self._store = _connect(host, port, connect_timeout, op_timeout)
        self._beat_store = _connect(host, port, connect_timeout, op_timeout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crossover-sgd-heartbeat", daemon=True)
        self.lost: List[int] = []  # set by diagnose(): the ranks found without a heartbeat
        self._seen: Dict[int, Tuple[int, float]] = {}  # rank -> (counter, when it was first read so)
        self._read_at: Dict[int, float] = {}
        self._unreachable = False

    def start(self) -> "Heartbeat":
        self._beat_store.add(_PREFIX + str(self.rank), 1)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating (the thread ends after its current store call)."""
        self._stop.set()

    def close(self) -> None:
        """Stop beating and wait for the thread to end (bounded by the store's 10 s timeout)."""
        self.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=15.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat_store.add(_PREFIX + str(self.rank), 1)
            except Exception:  # the store host (rank 0) is gone; diagnose() reports it
                return

    def mark_done(self) -> None:
        """Tell the others this rank ended normally (a closed connection then is not a loss)."""
        try:
            self._store.set(_DONE + str(self.rank), "1")
        except Exception:
            self._unreachable = True

    def is_done(self, rank: int) -> bool:
        """Whether ``rank`` said it ended normally (False when the store does not answer)."""
        if self._unreachable:
            return False
        try:
            return bool(self._store.check([_DONE + str(rank)]))
        except Exception:
            self._unreachable = True
            return False

    def linger_until_done(self, timeout: float, limit: float) -> None:
        """The store's host: keep the store up until every other rank is done or has had no
        heartbeat for ``timeout`` seconds (at most ``limit`` seconds)."""
        deadline = time.monotonic() + limit
        waiting = [r for r in range(self.world_size) if r != self.rank]
        while time.monotonic() < deadline:
            waiting = [r for r in waiting if not self.is_done(r) and (self.staleness(r) or 0.0) <= timeout]
            if not waiting:
                break
            time.sleep(self.interval)

    @property
    def reachable(self) -> bool:
        """False once a read of the store failed (its host is gone)."""
        return not self._unreachable

    def staleness(self, rank: int) -> Optional[float]:
        """Seconds since ``rank``'s counter was last seen to advance (read at most once per
        interval); None when the store no longer answers (its host is lost or frozen)."""
        now = time.monotonic()
        if self._unreachable:
            return None
        if now - self._read_at.get(rank, -1e9) >= self.interval:
            self._read_at[rank] = now
            try:
                value = self._store.add(_PREFIX + str(rank), 0)
            except Exception:
                self._unreachable = True
                return None
            if self._seen.get(rank, (None, 0.0))[0] != value:
                self._seen[rank] = (value, now)
        return now - self._seen[rank][1]

    def _counters(self) -> List[int]:
        return [self._store.add(_PREFIX + str(r), 0) for r in range(self.world_size)]

    def reports(self) -> bool:
        """After :meth:`diagnose`: whether this rank is the one that reports the failure (the
        lowest rank with a heartbeat), so that a job's output says it once, not once per rank."""
        return self.rank == min(r for r in range(self.world_size) if r not in self.lost or r == self.rank)

    def _linger(self, lost: set, limit: float = 15.0) -> None:
        """Rank 0 hosts the store: keep it up until the other ranks have diagnosed too."""
        deadline = time.monotonic() + limit
        waiting = [r for r in range(self.world_size) if r not in lost and r != self.rank]
        while waiting and time.monotonic() < deadline:
            waiting = [r for r in waiting if not self._store.check([_FAILED + str(r)])]
            time.sleep(self.interval)
        time.sleep(6 * self.interval)  # the last one needs 4 intervals to read its counters twice

    def diagnose(self, settle: Optional[float] = None) -> str:
        """A sentence naming the lost peers (call after a communication failure)."""
        self.stop()
        try:
            self._store.set(_FAILED + str(self.rank), "1")
            first = self._counters()
            time.sleep(settle if settle is not None else 4 * self.interval)
            second = self._counters()
            failed = {r for r in range(self.world_size) if self._store.check([_FAILED + str(r)])}
        except Exception:
            self.lost = [0]
            return "lost peer rank 0 (it hosts the rendezvous store and no longer answers)"
        lost = [r for r in range(self.world_size)
                if r != self.rank and second[r] == first[r] and r not in failed]
        self.lost = lost
        if self.rank == 0:
            self._linger(set(lost))
        if lost:
            return f"lost peer rank(s) {lost}: no heartbeat (killed, crashed, frozen or cut off from the network)"
        others = sorted(failed - {self.rank})
        if others:
            return f"peer rank(s) {others} failed too (a communication error spread through the job)"
        return "all peers still have a heartbeat: a peer is slow or the network failed"
