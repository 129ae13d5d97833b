"""Heartbeats: when communication fails, name the peer that died or stopped answering; and a
watchdog that ends a rank cut off from the rendezvous store.

Every rank's daemon thread increments a counter ``crossover_sgd/hb/<rank>`` in the rendezvous
store once per ``interval`` seconds. When a collective or exchange fails, the failing rank marks
itself ``failed`` and compares two readings of all counters: a rank whose counter stopped and
that did not mark itself failed is *lost* (killed, crashed, or frozen). A rank frozen inside a
collective keeps its heartbeat: only the process-group timeout catches a slow-but-alive peer.

**Store calls are bounded.** A TCPStore client waits for the reply to ``add``, ``check``,
``compare_set`` (and ``get`` of a key that exists) without any deadline: its ``timeout`` bounds
only the wait for a missing key. A store whose host is killed closes the connection (the call
fails at once), but one that is cut off by the network (a partition: nothing answers, not even a
reset) or whose host froze never replies, and the caller blocks in C++ for good, deaf to signals
(Python runs its handlers between bytecodes only). So every call this module makes from the
caller's thread runs on a thread of its own (:class:`BoundedStore`) and gives up after
``op_timeout`` seconds: the store then counts as *unreachable* (:meth:`Heartbeat.staleness`
returns None, as for a closed store) until the call in flight is answered after all.

**The watchdog** (:meth:`Heartbeat.watch`): a thread that watches the beating thread. A rank
whose beat has gone unanswered (not refused: a closed connection means the store's host is gone
for every rank, and nobody holds the store any more) for longer than ``limit`` seconds cannot
rendezvous with anybody: it is on the wrong side of a partition, or the store's host froze. The
watchdog then calls ``on_lost`` with one sentence naming what was lost;
:func:`end_rank` reports it as the rank's one-line error and ends the process with
:data:`~crossover_sgd.runtime.local_launcher.STORE_LOST_EXIT` (4), whatever its main thread is
blocked in. Every output file is written atomically (a reader sees the previous version or the
new one), so a rank ended so leaves its outputs complete up to there.

The threads must be joined (:meth:`Heartbeat.close`) before the interpreter exits: a daemon thread
still inside a store call (which releases the GIL) when Python finalizes is ended with
``pthread_exit`` as it takes the GIL back, and unwinding through the C++ frames aborts the whole
process ("terminate called without an active exception", exit -6) after a successful run. (A
thread stuck in an unanswered call cannot be joined; a distributed run ends with ``os._exit``,
:mod:`~crossover_sgd.runtime.exit`, which does not finalize.)
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

import torch.distributed as dist

from crossover_sgd.runtime.local_launcher import STORE_LOST_EXIT, report_line

__all__ = ["Heartbeat", "BoundedStore", "StoreTimeout", "end_rank"]

log = logging.getLogger(__name__)

_PREFIX = "crossover_sgd/hb/"
_FAILED = "crossover_sgd/failed/"
_DONE = "crossover_sgd/done/"


def _connect(host: str, port: int, connect_timeout: float, op_timeout: float) -> dist.TCPStore:
    store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=connect_timeout),
                          wait_for_workers=False)
    store.set_timeout(timedelta(seconds=op_timeout))
    return store


class StoreTimeout(dist.DistStoreError):
    """A store call that got no answer within its deadline (or one before it is still unanswered)."""


class _Call:
    def __init__(self, method: str, args: Tuple[Any, ...]):
        self.method, self.args = method, args
        self.done = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None


class BoundedStore:
    """A store client whose calls return within ``deadline`` seconds (see the module docstring).

    The calls run one at a time on a daemon thread; the caller waits ``deadline`` seconds for
    each. A call still unanswered then raises :class:`StoreTimeout` and stays in flight: the
    following calls raise at once, until it is answered (the store is back) or forever (cut off).
    A call that fails (the connection closed: the store's host is gone) breaks the client for good:
    every later call raises the same error at once."""

    def __init__(self, store: Any, deadline: float, name: str = "crossover-sgd-store"):
        self.store, self.deadline = store, deadline
        self.broken: Optional[BaseException] = None
        self._late: Optional[_Call] = None  # a call that outlived its deadline
        self._lock = threading.Lock()  # one caller at a time (as a TCPStore client serves them)
        self._calls: "queue.SimpleQueue[Optional[_Call]]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            try:
                call.value = getattr(self.store, call.method)(*call.args)
            except BaseException as exc:  # the connection closed, a key that never came...
                call.error = exc
            call.done.set()

    @property
    def unanswered(self) -> bool:
        """A call outlived its deadline and has still no answer."""
        return self._late is not None and not self._late.done.is_set()

    @property
    def available(self) -> bool:
        return self.broken is None and not self.unanswered

    def call(self, method: str, *args: Any) -> Any:
        with self._lock:
            return self._call(method, args)

    def _call(self, method: str, args: Tuple[Any, ...]) -> Any:
        if self.broken is not None:
            raise self.broken
        if self._late is not None:
            if not self._late.done.is_set():
                raise StoreTimeout(f"the store has not answered a call for more than {self.deadline:g} s")
            self._late = None  # answered after all: the store is back
        call = _Call(method, args)
        self._calls.put(call)
        if not call.done.wait(self.deadline):
            self._late = call
            raise StoreTimeout(f"no answer from the store within {self.deadline:g} s")
        if call.error is not None:
            if not isinstance(call.error, dist.DistStoreError) or "timeout" not in str(call.error).lower():
                self.broken = call.error  # not a missing key's wait: the connection is gone
            raise call.error
        return call.value

    def add(self, key: str, amount: int) -> int:
        return self.call("add", key, amount)

    def set(self, key: str, value: str) -> None:
        self.call("set", key, value)

    def get(self, key: str) -> bytes:
        return self.call("get", key)

    def check(self, keys: List[str]) -> bool:
        return self.call("check", keys)

    def compare_set(self, key: str, expected: str, desired: str) -> bytes:
        return self.call("compare_set", key, expected, desired)

    def close(self) -> None:
        """End the thread: at once when idle, after its call in flight otherwise (not waited
        for when that call has outlived its deadline: it may never end)."""
        self._calls.put(None)
        if not self.unanswered:
            self._thread.join(timeout=self.deadline + 1.0)


_ending = threading.Lock()


def end_rank(rank: int) -> Callable[[str], NoReturn]:
    """An ``on_lost`` for :meth:`Heartbeat.watch`: report ``rank R: <reason>`` as this rank's
    one-line error (to the local launcher, else on stderr) and end the process at once with
    :data:`STORE_LOST_EXIT`. Two watchdogs of one process report once."""

    def end(reason: str) -> NoReturn:
        if _ending.acquire(blocking=False):
            report_line(f"crossover-sgd: error: rank {rank}: {reason}", exit_code=STORE_LOST_EXIT)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(STORE_LOST_EXIT)
        while True:  # the other watchdog is ending the process
            time.sleep(60)

    return end


class Heartbeat:
    """A heartbeat thread for this rank, the diagnosis of lost peers, and the watchdog on the store."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, interval: float = 0.5,
                 connect_timeout: float = 60.0, op_timeout: float = 10.0):
        """Connect to the rendezvous store (waiting up to ``connect_timeout`` seconds: with many
        ranks starting at once on few cores, the store's host may answer slowly); store
        operations then give up after ``op_timeout`` seconds, so a diagnosis is quick and
        nothing waits for an unreachable store for good."""
        self.rank, self.world_size, self.interval, self.op_timeout = rank, world_size, interval, op_timeout
        self.address = f"{host}:{port}"
        self._store = BoundedStore(_connect(host, port, connect_timeout, op_timeout), op_timeout,
                                   name="crossover-sgd-store")
        self._beat_store = _connect(host, port, connect_timeout, op_timeout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crossover-sgd-heartbeat", daemon=True)
        self._watchdog: Optional[threading.Thread] = None
        self.lost: List[int] = []  # set by diagnose(): the ranks found without a heartbeat
        self._seen: Dict[int, Tuple[int, float]] = {}  # rank -> (counter, when it was first read so)
        self._read_at: Dict[int, float] = {}
        self._beating_since: Optional[float] = None  # the start of the beat in flight (None: between beats)
        self._answered = 0  # beats the store answered
        self._refused: Optional[str] = None  # a beat failed: the store's host is gone (not unreachable)

    def start(self) -> "Heartbeat":
        self._beat_store.add(_PREFIX + str(self.rank), 1)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating (the thread ends after its current store call) and watching."""
        self._stop.set()

    def close(self) -> None:
        """Stop beating and wait for the threads to end (bounded: a beat that has had no answer
        for ``op_timeout`` seconds is not waited for: it may never end)."""
        self.stop()
        self._store.close()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=2 * self.interval + 1.0)
        if self._thread.is_alive():
            since = self._beating_since
            stuck = since is not None and time.monotonic() - since > self.op_timeout
            if not stuck:
                self._thread.join(timeout=self.op_timeout + self.interval + 1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beating_since = time.monotonic()
            try:
                self._beat_store.add(_PREFIX + str(self.rank), 1)
            except Exception as exc:  # the store host (rank 0) is gone; diagnose() reports it
                self._refused = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                return
            self._beating_since, self._answered = None, self._answered + 1

    # ----------------------------------------------------------------------------- the watchdog
    def watch(self, limit: float, on_lost: Callable[[str], Any]) -> "Heartbeat":
        """Call ``on_lost(sentence)`` once, from a daemon thread, when a beat of this rank has
        gone unanswered for longer than ``limit`` seconds (not refused: see the module
        docstring); e.g. :func:`end_rank`. The silence is counted by the watchdog's own ticks
        (one per ``interval``, each counting at most two intervals) while one and the same beat
        is in flight, so a process that was frozen (SIGSTOP) or starved of CPU does not take its
        own pause for the store's."""
        if self._watchdog is not None:
            raise RuntimeError("this heartbeat is watched already")

        def run() -> None:
            silent, last, answered = 0.0, time.monotonic(), self._answered
            while not self._stop.wait(self.interval):
                now = time.monotonic()
                tick, last = min(now - last, 2 * self.interval), now
                same_beat = self._answered == answered and self._beating_since is not None
                if same_beat and self._refused is None and self._thread.is_alive():
                    silent += tick
                else:  # answered since, between beats, or refused (the host is gone: no partition)
                    silent, answered = 0.0, self._answered
                if silent > limit and not self._stop.is_set():
                    on_lost(f"lost the rendezvous store on rank 0 ({self.address}, unreachable): no answer for "
                            f"{silent:.1f} s (limit {limit:g} s); this rank is cut off from it by the network, or "
                            f"its host froze, and cannot rendezvous with anybody: it stops here")
                    return

        self._watchdog = threading.Thread(target=run, name="crossover-sgd-store-watchdog", daemon=True)
        self._watchdog.start()
        return self

    # ----------------------------------------------------------------------------- peers
    def mark_done(self) -> None:
        """Tell the others this rank ended normally (a closed connection then is not a loss)."""
        try:
            self._store.set(_DONE + str(self.rank), "1")
        except Exception:
            pass

    def is_done(self, rank: int) -> bool:
        """Whether ``rank`` said it ended normally (False when the store does not answer)."""
        if not self._store.available:
            return False
        try:
            return bool(self._store.check([_DONE + str(rank)]))
        except Exception:
            return False

    def compare_set(self, key: str, expected: str, desired: str) -> Optional[str]:
        """The store's ``compare_set`` (the value now under ``key``); None when it does not answer."""
        try:
            return self._store.compare_set(key, expected, desired).decode()
        except Exception:
            return None

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
        """False while the store does not answer (a call outlived ``op_timeout``), and for good
        once a call failed (its host is gone)."""
        return self._store.available

    def staleness(self, rank: int) -> Optional[float]:
        """Seconds since ``rank``'s counter was last seen to advance (read at most once per
        interval); None when the store does not answer (its host is lost or frozen, or this
        rank is cut off from it)."""
        now = time.monotonic()
        if not self._store.available:
            return None
        if now - self._read_at.get(rank, -1e9) >= self.interval:
            self._read_at[rank] = now
            try:
                value = self._store.add(_PREFIX + str(rank), 0)
            except Exception:
                return None
            if self._seen.get(rank, (None, 0.0))[0] != value:
                self._seen[rank] = (value, now)
        return now - self._seen[rank][1] if rank in self._seen else None

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
            try:
                waiting = [r for r in waiting if not self._store.check([_FAILED + str(r)])]
            except Exception:
                break
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
