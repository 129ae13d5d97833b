"""The one protocol every peer schedule of this package implements.

A *schedule* says, for every round ``t`` and every segment ``s`` of the model, which
ranks exchange that segment (:meth:`PeerSchedule.transfers`) and what the exchange
computes (:meth:`PeerSchedule.mixing_matrices`, orientation ``x_new = W_s @ x``, see
:mod:`topology.mixing`). Implemented by :class:`topology.CrossoverSchedule`,
:class:`topology.HierarchicalSchedule`, :class:`topology.RotatingGraph` (SGP's graphs,
the ring) and :class:`topology.Graph` (static graphs, D-SGD).

Transfers
    ``transfers(rank, t)`` lists one :class:`Transfer` per segment that ``rank`` carries
    in round ``t`` (ascending segments): ``send_to`` are the ranks that receive this
    rank's copy of the segment, ``recv_from`` the ranks whose copies it receives. Either
    may be empty (``n == 1``; crossover "no fairness" rank that nobody picked) or hold
    several ranks (SGP with ``k`` peers; a static graph's neighbours). Across ranks the
    plan is consistent: ``j in send_to`` of rank ``i``'s segment ``s`` iff ``i in
    recv_from`` of rank ``j``'s segment ``s`` (:func:`check_transfers`).

Relation to the mixing matrices
    With ``local_size == 1`` (flat schedules): ``W_s[i, j] != 0`` iff ``j == i`` or ``j``
    is in the ``recv_from`` of rank ``i``'s segment ``s``. With ``local_size = G > 1``
    (hierarchical: nodes of ``G`` consecutive ranks average inside the node before the
    transfers, and share what one local rank received after them) the same holds for
    nodes: ``W_s[i, j] != 0`` iff ``j``'s node is ``i``'s node or the node of a rank in
    the ``recv_from`` of segment ``s`` of some rank of ``i``'s node. Crossover,
    hierarchical and the rotating graphs average uniformly over the own (node-averaged)
    value and the received ones; static graphs use Metropolis-Hastings weights.
"""

from __future__ import annotations

import operator
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = ["Transfer", "PeerSchedule", "round_plan", "check_transfers"]


class Transfer(NamedTuple):
    """One rank's messages of one segment in one round.

    ``send_to``: ranks that receive this rank's copy of ``segment``; ``recv_from``:
    ranks whose copies this rank receives. Both may be empty; neither holds the rank
    itself or a rank twice.
    """

    segment: int
    send_to: tuple[int, ...]
    recv_from: tuple[int, ...]


@runtime_checkable
class PeerSchedule(Protocol):
    """What generic code (simulation, spectra, CLI, algorithms) may rely on (module doc)."""

    @property
    def n(self) -> int:
        """Number of ranks."""

    @property
    def num_segments(self) -> int:
        """Segments the model is cut into (1 for schedules that mix whole models)."""

    @property
    def local_size(self) -> int:
        """Ranks per node averaged before the transfers (1: no intra-node stage)."""

    @property
    def push_sum(self) -> bool:
        """True when ``W`` is column-stochastic and push-sum weights travel along."""

    @property
    def period(self) -> int | None:
        """Rounds after which the schedule repeats; ``None`` for i.i.d. random rounds."""

    def transfers(self, rank: int, round: int) -> list[Transfer]:
        """``rank``'s :class:`Transfer` per segment it carries in ``round`` (ascending segments)."""

    def mixing_matrices(self, round: int) -> np.ndarray:
        """``(num_segments, n, n)``: ``x_new = W_s @ x`` for segment ``s``."""

    def apply(self, x: np.ndarray, round: int) -> np.ndarray:
        """One round on stacked values ``x`` ``(n, d)`` (segments = column blocks)."""

    def describe(self) -> str:
        """One line naming the schedule and its parameters."""


def round_plan(schedule: PeerSchedule, round: int) -> list[list[Transfer]]:
    """Every rank's :meth:`~PeerSchedule.transfers` of ``round`` (index = rank)."""
    return [schedule.transfers(rank, round) for rank in range(schedule.n)]


def check_transfers(schedule: PeerSchedule, round: int) -> None:
    """Raise ``ValueError`` naming the first inconsistency of ``round``'s transfers.

    Checks: segments ascending, distinct and in ``0..num_segments-1``; peers in
    ``0..n-1``, distinct, never the rank itself; ``i`` sends segment ``s`` to ``j`` iff
    ``j`` lists ``i`` as a source of ``s``.
    """
    round = operator.index(round)
    n, num_segments = schedule.n, schedule.num_segments
    sends: set[tuple[int, int, int]] = set()
    recvs: set[tuple[int, int, int]] = set()
    for rank, transfers in enumerate(round_plan(schedule, round)):
        segments = [tr.segment for tr in transfers]
        if segments != sorted(set(segments)) or any(not 0 <= s < num_segments for s in segments):
            raise ValueError(
                f"round {round}, rank {rank}: segments {segments} must be ascending, distinct "
                f"and in 0..{num_segments - 1}"
            )
        for tr in transfers:
            for what, peers in (("send_to", tr.send_to), ("recv_from", tr.recv_from)):
                if len(set(peers)) != len(peers) or any(p == rank or not 0 <= p < n for p in peers):
                    raise ValueError(
                        f"round {round}, rank {rank}, segment {tr.segment}: {what}={list(peers)} must "
                        f"hold distinct ranks in 0..{n - 1} other than {rank}"
                    )
            sends.update((tr.segment, rank, int(dst)) for dst in tr.send_to)
            recvs.update((tr.segment, int(src), rank) for src in tr.recv_from)
    for seg, src, dst in sorted(sends ^ recvs):
        if (seg, src, dst) in sends:
            raise ValueError(
                f"round {round}, segment {seg}: rank {src} sends to rank {dst}, "
                f"which does not list {src} in recv_from"
            )
        raise ValueError(
            f"round {round}, segment {seg}: rank {dst} receives from rank {src}, "
            f"which does not list {dst} in send_to"
        )
