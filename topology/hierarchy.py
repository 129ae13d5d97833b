"""Hierarchical Crossover: ranks grouped into nodes, crossover between nodes.

Ranks -> nodes
    ``G = local_size`` consecutive ranks form a node: ``node_of(r) = r // G``,
    ``local_rank(r) = r % G``, ``rank_of(a, l) = a * G + l``. Alternatively
    ``groupnum`` nodes give ``G = n // groupnum``; either way ``G`` must divide ``n``.

One round (per segment ``s``)
    1. intra-node stage: every rank of node ``a`` gets the node mean ``m_a``;
    2. inter-node stage: a crossover schedule over the ``N = n / G`` node indices
       (:class:`topology.crossover.CrossoverSchedule`, same seed/round/segment keys)
       gives ``node_recv_from[s]``; node ``a`` gets ``(m_a + m_{node_recv_from[s][a]}) / 2``;
    3. the result is held by every rank of the node (with "use every GPU's link",
       the owning local rank shares it inside the node).
    As matrices on ranks: ``W_s = kron(W_node_s, I_G) @ kron(I_N, 1 1^T / G)
    = kron(W_node_s, 1 1^T / G)`` (:func:`topology.mixing.hierarchical_matrix`);
    doubly stochastic when the node map is a permutation, so the mean is conserved.

"Use every GPU's link"
    Segments are split among the ``G`` local ranks so that each carries about the
    same number of bytes (:func:`assign_segments_to_local_ranks`). For segment
    ``s`` owned by local rank ``l``, rank ``(a, l)`` sends to ``(send node, l)`` and
    receives from ``(node_recv_from[s][a], l)`` (:meth:`HierarchicalSchedule.transfers`, in the
    form of :mod:`topology.schedule`; :meth:`HierarchicalSchedule.inter_node_plan` gives the same
    plan for all ranks as :class:`InterNodeTransfer`, with a single source).
"""

from __future__ import annotations

import operator
from typing import NamedTuple, Sequence

import numpy as np

from .crossover import CrossoverSchedule, crossover_mean_square_rate
from .mixing import hierarchical_matrix, intra_node_matrix, lift_node_matrix, segment_slices
from .schedule import Transfer

__all__ = [
    "NodeLayout",
    "InterNodeTransfer",
    "assign_segments_to_local_ranks",
    "HierarchicalSchedule",
]


class NodeLayout:
    """Map ranks to nodes of ``local_size`` consecutive ranks (give ``local_size`` or ``groupnum``)."""

    def __init__(self, n: int, local_size: int | None = None, groupnum: int | None = None) -> None:
        n = operator.index(n)
        if n < 1:
            raise ValueError(f"n must be >= 1 (number of ranks), got n={n}")
        if (local_size is None) == (groupnum is None):
            raise ValueError("give exactly one of local_size and groupnum")
        if groupnum is not None:
            groupnum = operator.index(groupnum)
            if not 1 <= groupnum <= n or n % groupnum:
                raise ValueError(
                    f"groupnum={groupnum} does not divide n={n}: it must be a divisor of n "
                    f"({', '.join(str(d) for d in _divisors(n))})"
                )
            local_size = n // groupnum
        local_size = operator.index(local_size)
        if not 1 <= local_size <= n or n % local_size:
            raise ValueError(
                f"local_size={local_size} does not divide n={n}: it must be a divisor of n "
                f"({', '.join(str(d) for d in _divisors(n))})"
            )
        self.n = n
        self.local_size = local_size
        self.num_nodes = n // local_size

    def _check_rank(self, rank: int) -> int:
        rank = operator.index(rank)
        if not 0 <= rank < self.n:
            raise ValueError(f"rank must be in 0..{self.n - 1}, got rank={rank}")
        return rank

    def node_of(self, rank: int) -> int:
        return self._check_rank(rank) // self.local_size

    def local_rank(self, rank: int) -> int:
        return self._check_rank(rank) % self.local_size

    def rank_of(self, node: int, local_rank: int) -> int:
        if not 0 <= node < self.num_nodes or not 0 <= local_rank < self.local_size:
            raise ValueError(f"no rank for node={node}, local_rank={local_rank}")
        return node * self.local_size + local_rank

    def ranks_of(self, node: int) -> list[int]:
        """The ranks of ``node``, ascending (``node * G .. node * G + G - 1``)."""
        return [self.rank_of(node, l) for l in range(self.local_size)]

    def __repr__(self) -> str:
        return f"NodeLayout(n={self.n}, local_size={self.local_size}, num_nodes={self.num_nodes})"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def assign_segments_to_local_ranks(segment_bytes: Sequence[int], local_size: int) -> list[list[int]]:
    """Split segments among ``local_size`` local ranks with about equal bytes each.

    Greedy longest-processing-time: segments by decreasing size (ties: lower index
    first) go to the currently least-loaded local rank (ties: lower local rank).
    The largest load is at most ``4/3`` of the optimum; with equal sizes the
    counts differ by at most one. Returns, per local rank, its segment indices
    ascending (some lists are empty when there are fewer segments than ranks).
    """
    local_size = operator.index(local_size)
    if local_size < 1:
        raise ValueError(f"local_size must be >= 1, got {local_size}")
    sizes = [operator.index(b) for b in segment_bytes]
    if any(b < 0 for b in sizes):
        raise ValueError(f"segment sizes must be >= 0 bytes, got {sizes}")
    loads = [0] * local_size
    owned: list[list[int]] = [[] for _ in range(local_size)]
    for seg in sorted(range(len(sizes)), key=lambda s: (-sizes[s], s)):
        target = min(range(local_size), key=lambda l: (loads[l], l))
        loads[target] += sizes[seg]
        owned[target].append(seg)
    return [sorted(segs) for segs in owned]


class InterNodeTransfer(NamedTuple):
    """One rank's inter-node work for one segment in one round (:meth:`HierarchicalSchedule.inter_node_plan`).

    ``send_to``: ranks that receive this rank's copy of ``segment`` (exactly one
    with ``fair=True``; any number with ``fair=False``; empty with a single node).
    ``recv_from``: the rank whose copy this rank averages with (itself when there
    is a single node, meaning no exchange). The general form, with a tuple of
    sources, is :class:`topology.schedule.Transfer` (:meth:`HierarchicalSchedule.transfers`).
    """

    segment: int
    send_to: tuple[int, ...]
    recv_from: int


class HierarchicalSchedule:
    """Intra-node averaging + crossover between nodes, on ``n`` ranks.

    ``segment_bytes`` (default: equal sizes) decides which local rank carries
    which segment; the node-level schedule is
    ``CrossoverSchedule(num_nodes, num_segments, seed, fair, segmented)``.
    """

    push_sum = False
    period = None

    def __init__(
        self,
        n: int,
        num_segments: int,
        seed: int,
        local_size: int | None = None,
        groupnum: int | None = None,
        fair: bool = True,
        segmented: bool = True,
        segment_bytes: Sequence[int] | None = None,
    ) -> None:
        self.layout = NodeLayout(n, local_size=local_size, groupnum=groupnum)
        self.node_schedule = CrossoverSchedule(
            self.layout.num_nodes, num_segments, seed, fair=fair, segmented=segmented
        )
        if segment_bytes is None:
            segment_bytes = [1] * num_segments
        if len(segment_bytes) != num_segments:
            raise ValueError(
                f"segment_bytes has {len(segment_bytes)} entries, expected num_segments={num_segments}"
            )
        self.owners = assign_segments_to_local_ranks(segment_bytes, self.layout.local_size)
        owner = np.empty(num_segments, dtype=np.int64)
        for local, segs in enumerate(self.owners):
            owner[segs] = local
        self.owner_of_segment = owner

    @property
    def n(self) -> int:
        return self.layout.n

    @property
    def num_segments(self) -> int:
        return self.node_schedule.num_segments

    @property
    def local_size(self) -> int:
        return self.layout.local_size

    @property
    def num_nodes(self) -> int:
        return self.layout.num_nodes

    def node_peers(self, round: int):
        """The node-level :class:`topology.crossover.PeerMap` of ``round``."""
        return self.node_schedule.peers(round)

    def _plan(self, round: int, ranks: Sequence[int]) -> list[list[InterNodeTransfer]]:
        node_map = self.node_schedule.peers(round)
        layout = self.layout
        sends: dict[int, list[list[int]]] = {}  # segment -> per node, the nodes it sends to
        plan: list[list[InterNodeTransfer]] = []
        for rank in ranks:
            node, local = layout.node_of(rank), layout.local_rank(rank)
            for s in self.owners[local]:
                if s not in sends:
                    sends[s] = node_map.send_lists(s)
            plan.append(
                [
                    InterNodeTransfer(
                        segment=s,
                        send_to=tuple(layout.rank_of(b, local) for b in sends[s][node]),
                        recv_from=layout.rank_of(int(node_map.recv_from[s, node]), local),
                    )
                    for s in self.owners[local]
                ]
            )
        return plan

    def inter_node_plan(self, round: int) -> list[list[InterNodeTransfer]]:
        """Per rank, its :class:`InterNodeTransfer` list (segments it owns, ascending) for ``round``."""
        return self._plan(round, range(self.n))

    def transfers(self, rank: int, round: int) -> list[Transfer]:
        """``rank``'s inter-node :class:`~topology.schedule.Transfer` per segment it owns.

        The intra-node stages (averaging before, sharing the result after) are collectives
        inside the node and not listed; ``local_size`` tells generic code they exist.
        """
        (plan,) = self._plan(round, [rank])
        return [
            Transfer(tr.segment, tr.send_to, () if tr.recv_from == rank else (tr.recv_from,))
            for tr in plan
        ]

    def intra_node_matrix(self) -> np.ndarray:
        """``kron(I_N, 1 1^T / G)``."""
        return intra_node_matrix(self.num_nodes, self.local_size)

    def inter_node_matrices(self, round: int) -> np.ndarray:
        """``(S, n, n)``: the node crossover lifted to ranks, ``kron(W_node_s, I_G)``."""
        return np.stack(
            [lift_node_matrix(w, self.local_size) for w in self.node_schedule.mixing_matrices(round)]
        )

    def mixing_matrices(self, round: int) -> np.ndarray:
        """``(S, n, n)``: ``kron(W_node_s, I_G) @ kron(I_N, 1 1^T / G)``."""
        return np.stack(
            [hierarchical_matrix(r, self.local_size) for r in self.node_schedule.recv_from(round)]
        )

    def apply(self, x: np.ndarray, round: int) -> np.ndarray:
        """One round on stacked values ``x`` ``(n, d)`` without dense matrices."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"x must have shape (n={self.n}, d), got {x.shape}")
        g, nodes = self.local_size, self.num_nodes
        means = x.reshape(nodes, g, x.shape[1]).mean(axis=1)
        mixed = np.empty_like(means)
        slices = segment_slices(x.shape[1], self.num_segments)
        for row, cols in zip(self.node_schedule.recv_from(round), slices):
            block = means[:, cols]
            mixed[:, cols] = 0.5 * (block + block[row])
        return np.repeat(mixed, g, axis=0)

    def mean_square_rate(self) -> float:
        """Exact expected contraction per round: the node-level crossover's rate."""
        return crossover_mean_square_rate(self.num_nodes, self.node_schedule.fair)

    def describe(self) -> str:
        s = self.node_schedule
        return (
            f"hierarchical(n={self.n}, local_size={self.local_size}, nodes={self.num_nodes}, "
            f"segments={s.num_segments}, seed={s.seed}, fair={s.fair}, segmented={s.segmented})"
        )

    def __repr__(self) -> str:
        return f"<HierarchicalSchedule {self.describe()}>"
