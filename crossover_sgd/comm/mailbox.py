"""Letters between a rank and a fixed set of peers: requests and replies of a parameter server.

A *letter* is a small header (``HEADER`` float64 numbers: its kind first, then the fields the
protocol defines) followed by payload tensors whose count and shapes the header determines (the
``payload`` callback, the same on both ends). The first field names the kind; a kind listed in
``last_kinds`` is the last letter a peer sends on the link (its receiver then stops).

The engine is plain ``torch.distributed`` point-to-point over one two-rank Gloo group per peer
(:func:`crossover_sgd.comm.edges.edge_groups`), for the reasons measured in
:mod:`crossover_sgd.comm.edges`: a receive that times out closes every pair of its group, and a
dead peer's closed connection must break its own link only. Per peer, a *receiver* thread takes
whole letters in order (a blocking ``recv`` without a deadline, never a timed-out one) and puts
them into one queue, so the owner sees letters from all peers in arrival order; a *sender* thread
sends queued letters in order, so :meth:`Mailbox.send` never blocks the caller (a worker keeps
computing while its push travels). Sending and receiving on one pair from two threads at once is
supported by Gloo (checked here).

Losses: a peer whose connection closes is reported at once (a :class:`LostPeer` letter in the
queue, raised by :meth:`Mailbox.receive`); a peer that stays silent while the owner waits for it
is lost after ``timeout_s`` seconds if its heartbeat (``liveness``: seconds since its heartbeat
last advanced) is as old, and after ``bound_s`` anyway (a *patient* wait, for a peer that may
rightly be silent for long while alive, has no such bound: only a peer without a heartbeat is
lost). A lost peer is reported once; its later failures are ignored, and nothing waits for its
letters to leave.

Payload tensors must live in host memory and must not change after :meth:`Mailbox.send` (the
sender thread reads them later): pass a copy of a buffer that keeps changing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist

from crossover_sgd.comm.failure import first_line
from crossover_sgd.comm.stats import CommStats
from crossover_sgd.errors import PeerError

__all__ = ["HEADER", "Letter", "LostPeer", "Mailbox"]

log = logging.getLogger(__name__)

#: Numbers in a letter's header (float64: integers up to 2**53 are exact).
HEADER = 8
_HEADER_BYTES = HEADER * 8


@dataclass
class Letter:
    """One letter from ``peer``: its header (``header[0]`` is the kind) and its payload."""

    peer: int
    header: List[float]
    tensors: List[torch.Tensor] = field(default_factory=list)
    arrived: float = field(default_factory=time.monotonic)

    @property
    def kind(self) -> int:
        return int(self.header[0])


class LostPeer(PeerError):
    """A peer of the mailbox died or stayed silent too long."""

    def __init__(self, peer: int, message: str):
        super().__init__(message)
        self.peer = peer


@dataclass
class _Failure:
    peer: int
    reason: str


class Mailbox:
    """Letters to and from ``groups`` (peer -> two-rank group); see the module docstring.

    ``payload(peer, header)``: the empty tensors a letter with ``header`` from ``peer`` carries.
    ``names``: how errors name a peer (``{3: "worker rank 3"}``). ``delay_s``: every letter
    leaves that much later (a slow link on purpose, for tests and benchmarks)."""

    def __init__(self, rank: int, groups: Mapping[int, Any],
                 payload: Callable[[int, List[float]], List[torch.Tensor]], *, stats: CommStats,
                 last_kinds: Sequence[int] = (), names: Optional[Mapping[int, str]] = None,
                 timeout_s: float = 300.0, bound_s: Optional[float] = None,
                 liveness: Optional[Callable[[int], Optional[float]]] = None, delay_s: float = 0.0):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.rank, self.groups, self.payload, self.stats = rank, dict(groups), payload, stats
        self.last_kinds = frozenset(int(k) for k in last_kinds)
        self.names = dict(names or {})
        self.timeout_s = timeout_s
        self.bound_s = bound_s if bound_s is not None else 4 * timeout_s
        self.liveness = liveness
        self.delay_s = delay_s  # added before every letter leaves: a slow link on purpose
        self.heard: Dict[int, float] = {peer: time.monotonic() for peer in self.groups}
        self._inbox: "queue.Queue[Any]" = queue.Queue()
        self._held: List[Letter] = []  # taken from the queue but not asked for yet (see receive)
        self._outboxes: Dict[int, "queue.Queue[Any]"] = {}
        self._lock = threading.Lock()
        self._unsent: Dict[int, int] = {peer: 0 for peer in self.groups}
        self.lost: List[int] = []  # peers reported lost (once)
        self._sent_all = threading.Condition(self._lock)
        self.closed: Dict[int, str] = {}  # peer -> why its link ended (its last letter, or a failure)
        for peer, group in sorted(self.groups.items()):
            threading.Thread(target=self._receive_loop, args=(peer, group), daemon=True,
                             name=f"crossover-sgd-mailbox-recv-{peer}").start()
            self._outboxes[peer] = queue.Queue()
            threading.Thread(target=self._send_loop, args=(peer, group), daemon=True,
                             name=f"crossover-sgd-mailbox-send-{peer}").start()

    def name(self, peer: int) -> str:
        return self.names.get(peer, f"rank {peer}")

    # ----------------------------------------------------------------------------- sending
    def send(self, peer: int, header: Sequence[float], tensors: Sequence[torch.Tensor] = ()) -> None:
        """Queue a letter to ``peer`` (returns at once; see the module docstring on payloads)."""
        if len(header) > HEADER:
            raise ValueError(f"a header holds {HEADER} numbers, got {len(header)}")
        head = torch.zeros(HEADER, dtype=torch.float64)
        head[: len(header)] = torch.tensor([float(v) for v in header], dtype=torch.float64)
        with self._lock:
            self._unsent[peer] += 1
        self._outboxes[peer].put((head, list(tensors)))

    def wait_sent(self, timeout: Optional[float] = None) -> bool:
        """Wait until every queued letter to a peer not lost has left (or failed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._sent_all:
            while any(n for peer, n in self._unsent.items() if peer not in self.lost):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._sent_all.wait(0.5 if left is None else min(left, 0.5))
        return True

    def _send_loop(self, peer: int, group: Any) -> None:
        outbox = self._outboxes[peer]
        failed = False
        while True:
            head, tensors = outbox.get()
            try:
                if not failed:
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    dist.send(head, dst=peer, group=group)
                    for tensor in tensors:
                        dist.send(tensor, dst=peer, group=group)
                    nbytes = _HEADER_BYTES + sum(t.numel() * t.element_size() for t in tensors)
                    with self._lock:
                        self.stats.add(nbytes, 0)
            except Exception as exc:  # the peer's connection closed: its receiver reports it too
                failed = True
                self._inbox.put(_Failure(peer, first_line(exc)))
            finally:
                with self._sent_all:
                    self._unsent[peer] -= 1
                    self._sent_all.notify_all()
            if not failed and int(head[0]) in self.last_kinds:
                return

    # ----------------------------------------------------------------------------- receiving
    def _receive_loop(self, peer: int, group: Any) -> None:
        while True:
            head = torch.empty(HEADER, dtype=torch.float64)
            try:
                dist.recv(head, src=peer, group=group)
                header = head.tolist()
                tensors = self.payload(peer, header)
                for tensor in tensors:
                    dist.recv(tensor, src=peer, group=group)
            except Exception as exc:
                self._inbox.put(_Failure(peer, first_line(exc)))
                return
            with self._lock:
                self.stats.add(0, _HEADER_BYTES + sum(t.numel() * t.element_size() for t in tensors))
            self._inbox.put(Letter(peer, header, tensors))
            if int(header[0]) in self.last_kinds:
                return

    def receive(self, waiting_for: Sequence[int], what: str = "a letter",
                accept: Optional[Callable[[Letter], bool]] = None, patient: bool = False,
                within: Optional[float] = None) -> Optional[Letter]:
        """The next letter (arrival order) that ``accept`` takes (default: any); letters it does
        not take are held for later calls. ``waiting_for``: the peers the caller needs a letter
        from (checked for silence: see the module docstring; ``patient``: no bound for a peer
        with a heartbeat). ``within``: return None if no such letter came within that many
        seconds. Raises :class:`LostPeer`."""
        for i, letter in enumerate(self._held):
            if accept is None or accept(letter):
                return self._held.pop(i)
        started = time.monotonic()
        with self.stats.timed():
            while True:
                wait = 0.25 if within is None else min(0.25, started + within - time.monotonic())
                if wait <= 0:
                    return None
                try:
                    item = self._inbox.get(timeout=wait)
                except queue.Empty:
                    self._check_silence([p for p in waiting_for if p not in self.lost], started, what, patient)
                    continue
                if isinstance(item, _Failure):
                    self._fail(item.peer, f"its connection failed ({item.reason})")
                    continue
                self.heard[item.peer] = item.arrived
                if int(item.header[0]) in self.last_kinds:
                    self.closed[item.peer] = "ended"
                if accept is None or accept(item):
                    return item
                self._held.append(item)

    def poll(self, accept: Callable[[Letter], bool]) -> Optional[Letter]:
        """A letter ``accept`` takes if one has arrived (no waiting); raises on a lost peer."""
        for i, letter in enumerate(self._held):
            if accept(letter):
                return self._held.pop(i)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return None
            if isinstance(item, _Failure):
                self._fail(item.peer, f"its connection failed ({item.reason})")
                continue
            self.heard[item.peer] = item.arrived
            if accept(item):
                return item
            self._held.append(item)

    def _fail(self, peer: int, reason: str) -> None:
        if self.closed.get(peer) == "ended" or peer in self.lost:  # ended normally, or reported already
            return
        self.closed[peer] = reason
        self._lose(peer, f"lost {self.name(peer)}: {reason}")

    def _lose(self, peer: int, message: str) -> None:
        self.lost.append(peer)
        with self._sent_all:
            self._sent_all.notify_all()
        raise LostPeer(peer, message)

    def _check_silence(self, peers: Sequence[int], since: float, what: str, patient: bool = False) -> None:
        now = time.monotonic()
        for peer in peers:
            # read the heartbeat all along the wait, not only once the peer is silent too long: its
            # staleness counts from the first reading that saw it stop, so read late it would find
            # a frozen peer only after twice the timeout
            stale = self.liveness(peer) if self.liveness is not None else None
            silent = now - max(since, self.heard.get(peer, since))
            if silent <= self.timeout_s:
                continue
            if stale is None or stale > self.timeout_s:
                why = "and no heartbeat" if stale is not None else "(no heartbeat to tell whether it is alive)"
                self._lose(peer, f"lost {self.name(peer)}: no {what} for {silent:.0f} s {why}")
            if silent > self.bound_s and not patient:
                self._lose(peer, f"lost {self.name(peer)}: no {what} for {silent:.0f} s although alive "
                                 f"(the bound is {self.bound_s:.0f} s)")
