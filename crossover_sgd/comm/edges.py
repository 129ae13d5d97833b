"""Point-to-point links to a rank's graph neighbours that survive the loss of a neighbour.

The peer-to-peer family exchanges one flat message per edge, at the steps the edge's slot comes
up, and must go on when a neighbour dies or freezes (``--swap_timeout``). Two engine facts
(measured on torch 2.14, Gloo) decide the design:

* a receive that times out on a Gloo group closes *every* pair of that group on this rank
  ("Application timeout caused pair closure"): after one timed-out neighbour a rank could talk to
  no one over the world group;
* a dead peer's connection reports "Connection closed by peer" at once, on that pair only.

So every edge gets its own two-rank Gloo group (:func:`edge_groups`, created once by every rank in
the same order). A timeout or a closed connection then breaks that edge alone. Messages travel
over Gloo in host memory (a CUDA model is staged through CPU buffers): NCCL communicators abort
as a whole on a timeout and cannot drop one neighbour.

Two modes:

* **synchronous** (default): an exchange sends this rank's message and waits for the
  neighbour's message of the same exchange, so replicas advance in lockstep with their
  neighbours (no world-wide barrier);
* **asynchronous** (``--async_step``): a receive is always posted per edge; an exchange takes the
  last message that arrived (or keeps the previous one) and sends only if the previous send has
  left. Nobody waits for a slow neighbour.

A neighbour is *lost* when its connection closes (at once), or when it has been silent for
``timeout_s`` seconds *and* its heartbeat (``liveness``: seconds since the neighbour's heartbeat
last advanced, from the rendezvous store) is as old: a neighbour that is alive but itself waiting
for a lost node is waited for (otherwise one frozen node would make its neighbours drop each
other in a cascade). Without a heartbeat (the store's host is the lost node, or the store does
not answer: ``liveness`` returns None within its bound) silence alone decides; and no synchronous
wait exceeds ``bound_s`` (the process-group timeout, by default ``3 * timeout_s``) even for a
live neighbour. (A rank cut off from the store by a partition ends by itself: its heartbeat's
watchdog, :mod:`crossover_sgd.runtime.watchdog`.) Gloo's point-to-point requests
report completion only from ``wait()`` (``is_completed()`` stays False until then), and a
``wait(timeout)`` that expires closes the edge's pair even if the neighbour is alive; so each
edge has two waiter threads (sends, receives) that call ``wait()`` without a deadline and set an
event, and the exchange watches the events while it checks on the neighbour.

A lost neighbour is *dropped* when ``drop`` is set, for good: it is no longer sent to nor waited
for. Without ``drop`` the exchange raises :class:`LostNeighbour` naming it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from crossover_sgd.comm.failure import first_line
from crossover_sgd.comm.stats import CommStats
from crossover_sgd.errors import PeerError

__all__ = ["Edge", "EdgeLinks", "LostNeighbour", "edge_groups"]

log = logging.getLogger(__name__)
_ABANDONED: List["Edge"] = []  # dropped edges whose posted receives may still complete


def _short(reason: str) -> str:
    """Gloo's long messages in a few words."""
    lower = reason.lower()
    for words, short in (("connection closed", "its connection closed (it died)"),
                         ("connection reset", "its connection was reset (it died)"),
                         ("timed out", "it did not answer in time")):
        if words in lower:
            return short
    return first_line(RuntimeError(reason), 120)


class LostNeighbour(PeerError):
    """A neighbour died or stopped answering (and lost neighbours are not dropped)."""

    def __init__(self, peer: int, message: str):
        super().__init__(message)
        self.peer = peer


def edge_groups(edges: Sequence[Tuple[int, int]], rank: int, timeout_s: float) -> Dict[int, Any]:
    """A two-rank Gloo group per edge ``(i, j)``; every rank calls this with the same edges in the
    same order (``dist.new_group`` is collective). Returns this rank's groups by neighbour."""
    groups: Dict[int, Any] = {}
    for i, j in edges:
        group = dist.new_group([i, j], backend="gloo", timeout=timedelta(seconds=timeout_s))  # not a deadline
        if rank in (i, j):
            groups[j if rank == i else i] = group
    return groups


class Completion:
    """The end of one posted request, set by the edge's waiter thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: Optional[BaseException] = None


class _Waiter:
    """A daemon thread that waits for one edge's requests of one kind, in posting order."""

    def __init__(self, name: str):
        self.queue: "queue.SimpleQueue" = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            work, done = self.queue.get()
            try:
                work.wait()
            except BaseException as exc:  # the neighbour's connection closed (or a timeout)
                done.error = exc
            done.event.set()

    def watch(self, work: Any) -> Completion:
        done = Completion()
        self.queue.put((work, done))
        return done


@dataclass
class Edge:
    """This rank's end of one edge: the group, the staging buffers and what is in flight."""

    peer: int
    group: Any
    outbox: torch.Tensor
    inbox: torch.Tensor
    last: torch.Tensor  # the neighbour's last message that arrived (its initial value before)
    send: Optional[Completion] = None
    recv: Optional[Completion] = None
    waiters: Dict[str, _Waiter] = field(default_factory=dict)
    heard: float = field(default_factory=time.monotonic)
    exchanges: int = 0


class EdgeLinks:
    """Flat messages of ``numel`` elements to and from each neighbour; see the module docstring."""

    def __init__(self, rank: int, groups: Mapping[int, Any], initial: Mapping[int, torch.Tensor], *,
                 asynchronous: bool, timeout_s: float, drop: bool, stats: CommStats,
                 names: Optional[Mapping[int, str]] = None,
                 liveness: Optional[Callable[[int], Optional[float]]] = None,
                 finished: Optional[Callable[[int], bool]] = None, bound_s: Optional[float] = None):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.rank, self.asynchronous, self.timeout_s, self.drop, self.stats = rank, asynchronous, timeout_s, drop, stats
        self.names = dict(names or {})
        self.liveness = liveness
        self.finished = finished  # whether a neighbour said it ended normally
        self.bound_s = bound_s if bound_s is not None else 3 * timeout_s
        self.ended: List[int] = []  # neighbours that ended normally (left E without being lost)
        self.edges: Dict[int, Edge] = {}
        for peer in sorted(groups):
            last = initial[peer].detach().to("cpu").reshape(-1).clone()
            self.edges[peer] = Edge(peer, groups[peer], torch.empty_like(last), torch.empty_like(last), last)
        self.dropped: List[int] = []
        self.dropped_at: Dict[int, float] = {}  # peer -> when it was dropped (seconds since the epoch)
        if asynchronous:
            for edge in self.edges.values():
                self._post_recv(edge)

    # ----------------------------------------------------------------------------- queries
    @property
    def live(self) -> List[int]:
        """The neighbours still in E, in rank order."""
        return list(self.edges)

    def name(self, peer: int) -> str:
        return f"{self.names[peer]} (rank {peer})" if peer in self.names else f"rank {peer}"

    def last(self, peer: int) -> torch.Tensor:
        """The last message that arrived from ``peer`` (on the CPU)."""
        return self.edges[peer].last

    def add_to(self, out: torch.Tensor, coefficients: Mapping[int, float], part: slice = slice(None)) -> torch.Tensor:
        """``out += sum_p coefficients[p] * last(p)[part]``, in place (one pass per neighbour)."""
        for peer, c in coefficients.items():
            out.add_(self.edges[peer].last[part].to(out.device, non_blocking=True), alpha=c)
        return out

    # ----------------------------------------------------------------------------- exchange
    def exchange(self, messages: Mapping[int, torch.Tensor]) -> Dict[int, torch.Tensor]:
        """Send ``messages[peer]`` to each listed live neighbour and take its message in return;
        returns, per live listed neighbour, its message (synchronous: of this exchange;
        asynchronous: the last one that arrived). Neighbours lost meanwhile are dropped (or raise)."""
        peers = [p for p in sorted(messages) if p in self.edges]
        started = time.perf_counter()
        sent = received = 0
        for peer in peers:
            edge = self.edges[peer]
            if self.asynchronous:
                received += self._take_arrived(edge)
                if peer not in self.edges:
                    continue
            if edge.send is not None and not self.asynchronous:
                raise AssertionError("a synchronous send is still in flight")
            if edge.send is None or self._done(edge, edge.send, "send"):
                if peer not in self.edges:
                    continue
                message = messages[peer].detach().reshape(-1)
                if self.asynchronous or message.device.type != "cpu" or not message.is_contiguous():
                    message = edge.outbox.copy_(message)  # it changes (or is not in host memory) while it travels
                edge.send = self._post(edge, "send", message)
                sent += message.numel() * message.element_size()
            if not self.asynchronous and peer in self.edges:
                self._post_recv(edge)
        if not self.asynchronous:
            received += self._wait_all([self.edges[p] for p in peers if p in self.edges])
        self.stats.add(sent, received, time.perf_counter() - started)
        return {p: self.edges[p].last for p in peers if p in self.edges}

    def check_silence(self) -> None:
        """Asynchronous mode: drop (or raise for) a silent neighbour without a heartbeat."""
        for edge in list(self.edges.values()):
            if edge.recv is not None and not edge.recv.event.is_set():
                self._check_alive(edge, edge.heard, bounded=False)

    def _check_alive(self, edge: Edge, since: float, bounded: bool = True) -> None:
        """Lose ``edge`` if its neighbour has been silent since ``since`` (monotonic) for longer
        than the timeout and has no heartbeat either (or, ``bounded``, for ``bound_s`` anyway)."""
        silent = time.monotonic() - since
        stale = self.liveness(edge.peer) if self.liveness is not None else None  # read on: a baseline
        if silent <= self.timeout_s:
            return
        if stale is None or stale > self.timeout_s:
            why = "no heartbeat" if stale is not None else "no heartbeat to tell"
            self._lost(edge, f"silent for {silent:.1f} s, {why}")
        elif bounded and silent > self.bound_s:
            self._lost(edge, f"silent for {silent:.1f} s although alive")

    # ----------------------------------------------------------------------------- internals
    def _post(self, edge: Edge, kind: str, message: Optional[torch.Tensor] = None) -> Optional[Completion]:
        try:
            if kind == "send":
                work = dist.isend(message, dst=edge.peer, group=edge.group)
            else:
                work = dist.irecv(edge.inbox, src=edge.peer, group=edge.group)
        except RuntimeError as exc:
            self._lost(edge, first_line(exc))
            return None
        if kind not in edge.waiters:
            edge.waiters[kind] = _Waiter(f"crossover-sgd-edge-{edge.peer}-{kind}")
        return edge.waiters[kind].watch(work)

    def _post_recv(self, edge: Edge) -> None:
        edge.recv = self._post(edge, "recv")

    def _done(self, edge: Edge, work: Completion, kind: str) -> bool:
        """Whether ``work`` finished; a failed one loses the edge (and counts as not done)."""
        if not work.event.is_set():
            return False
        if work.error is not None:
            self._lost(edge, first_line(work.error))
            return False
        if kind == "send":
            edge.send = None
        return True

    def _take_arrived(self, edge: Edge) -> int:
        """Asynchronous mode: if the neighbour's message arrived, keep it and post the next receive."""
        if edge.recv is None or not self._done(edge, edge.recv, "recv"):
            return 0
        edge.last, edge.inbox = edge.inbox, edge.last  # no copy: the next receive goes to the old one
        edge.heard, edge.exchanges = time.monotonic(), edge.exchanges + 1
        self._post_recv(edge)
        return edge.inbox.numel() * edge.inbox.element_size()

    def _wait_all(self, edges: List[Edge]) -> int:
        """Synchronous mode: wait for this exchange's sends and receives on ``edges``, all at
        once (a neighbour that dies meanwhile is noticed whichever edge is slow), checking on the
        silent neighbours; returns the bytes received."""
        started, received = time.monotonic(), 0
        pending = list(edges)
        while pending:
            for edge in list(pending):
                works = [edge.send, edge.recv]
                failed = next((w for w in works if w is None or (w.event.is_set() and w.error is not None)), False)
                if failed is not False or edge.peer not in self.edges:
                    self._lost(edge, first_line(failed.error) if failed is not None and failed is not False
                               else "posting failed")
                    pending.remove(edge)
                elif all(w.event.is_set() for w in works):
                    edge.send = edge.recv = None
                    edge.last, edge.inbox = edge.inbox, edge.last
                    edge.heard, edge.exchanges = time.monotonic(), edge.exchanges + 1
                    received += edge.inbox.numel() * edge.inbox.element_size()
                    pending.remove(edge)
                else:
                    self._check_alive(edge, started)
                    if edge.peer not in self.edges:
                        pending.remove(edge)
            if pending:
                waiting = next((w for w in (pending[0].send, pending[0].recv) if not w.event.is_set()), None)
                if waiting is not None:  # (it may have completed since the loop looked)
                    waiting.event.wait(0.02)
        return received

    def _lost(self, edge: Edge, reason: str) -> None:
        if edge.peer not in self.edges:
            return
        if self.finished is not None and self.finished(edge.peer):  # it finished training: not a loss
            del self.edges[edge.peer]
            _ABANDONED.append(edge)
            self.ended.append(edge.peer)
            log.info("rank %d: neighbour %s finished training; %d left", self.rank, self.name(edge.peer),
                     len(self.edges))
            return
        what = f"lost neighbour {self.name(edge.peer)}: {_short(reason)}"
        if not self.drop:
            raise LostNeighbour(edge.peer, what)
        del self.edges[edge.peer]
        _ABANDONED.append(edge)  # works still posted may write its buffers: keep them alive
        self.dropped.append(edge.peer)
        self.dropped_at[edge.peer] = time.time()
        log.warning("rank %d: %s: dropped from the neighbours for good; %d left", self.rank, what, len(self.edges))

    def state(self) -> Dict[str, Any]:
        return {"dropped": list(self.dropped),
                "last": {p: e.last.clone() for p, e in self.edges.items()}}
