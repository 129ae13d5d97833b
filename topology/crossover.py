"""Crossover-SGD's load-balanced random topology, and the study's two ablations.

Per round ``t`` and segment ``s`` every rank computes the same map ``recv_from[s]``
(rank ``i`` receives segment ``s`` from ``recv_from[s][i]``) from the shared key
``(seed, t, s)`` (see :mod:`topology.derangement`), sends its own copy of the
segment to the ranks that picked it, and averages: ``x_i <- (x_i + x_{recv_from[s][i]}) / 2``,
i.e. ``x_new = W_s @ x`` with ``W_s = (I + P_s) / 2`` (:func:`topology.mixing.crossover_matrix`).

Variants
    * ``fair=True, segmented=True`` (Crossover-SGD): ``recv_from[s]`` is a uniform
      derangement, independent per segment and round. Every rank sends exactly one
      copy and receives exactly one copy of every segment; ``W_s`` is doubly
      stochastic, so the replicas' average is conserved exactly.
    * ``fair=False`` ("no fairness"): every receiver picks its sender uniformly among
      the other ranks, independently; a rank may send several copies (or none).
      ``W_s`` is only row-stochastic; the average drifts.
    * ``segmented=False`` ("no segmentation"): the map of segment 0 (key
      ``(seed, t, 0)``) is used for every segment of round ``t``.
    * ``n == 1``: there is no peer; the map is the identity (``recv_from == [0]``),
      meaning "no communication", and ``W = I``.

Mean-square contraction (closed form, used for the spectral gap)
    With ``J = 1 1^T / n`` and ``y`` the disagreement (``x`` minus its average), one
    round gives ``E||y'||^2 = y^T E[W^T (I - J) W] y``. The distribution of the map
    is invariant under relabelling ranks, so that expectation is ``a I + b 1 1^T``
    and every ``y`` orthogonal to ``1`` contracts by exactly the factor ``a``:
    ``a = (n - 2) / (2 (n - 1))`` for the uniform derangement (using
    ``E[P] = (1 1^T - I) / (n - 1)``), and ``a = (n - 2) / (2 (n - 1)) - (n - 2) / (4 (n - 1)^2)``
    for "no fairness" (which contracts a little faster, towards a biased value).
    Segments are mixed independently, so the rate per segment is the rate.
"""

from __future__ import annotations

import operator
from typing import Iterator

import numpy as np

from .derangement import key_bit_generator, sample_derangement, sample_other_ranks
from .mixing import crossover_matrix, segment_slices
from .schedule import Transfer

__all__ = ["PeerMap", "CrossoverSchedule", "crossover_mean_square_rate"]


class PeerMap:
    """The peer maps of one round, for every segment.

    ``recv_from[s, i]`` is the rank that rank ``i`` receives segment ``s`` from;
    ``recv_from[s, i] == i`` only when ``n == 1`` and means "no exchange".
    ``send_to`` exists only for load-balanced maps (permutations): it is the
    inverse permutation, ``send_to[s, recv_from[s, i]] == i``. For any map,
    :meth:`receivers` / :meth:`send_lists` give the (possibly empty, possibly
    several) ranks a rank sends a segment to. ``send_to, recv_from = peer_map``
    unpacks a load-balanced map.
    """

    def __init__(self, recv_from: np.ndarray) -> None:
        r = np.array(recv_from, dtype=np.int64, copy=True)
        if r.ndim != 2:
            raise ValueError(f"recv_from must have shape (num_segments, n), got {r.shape}")
        n = r.shape[1]
        if r.size and (r.min() < 0 or r.max() >= n):
            raise ValueError(f"recv_from entries must lie in 0..{n - 1}")
        r.setflags(write=False)
        self._recv_from = r

    @property
    def recv_from(self) -> np.ndarray:
        """``(num_segments, n)`` read-only int64 array."""
        return self._recv_from

    @property
    def n(self) -> int:
        return int(self._recv_from.shape[1])

    @property
    def num_segments(self) -> int:
        return int(self._recv_from.shape[0])

    @property
    def send_counts(self) -> np.ndarray:
        """``(num_segments, n)``: how many copies of each segment each rank sends."""
        counts = np.zeros(self._recv_from.shape, dtype=np.int64)
        ranks = np.arange(self.n)
        for s, row in enumerate(self._recv_from):
            remote = row != ranks
            counts[s] = np.bincount(row[remote], minlength=self.n)
        return counts

    @property
    def is_load_balanced(self) -> bool:
        """True when every segment's map is a permutation (one copy sent and received)."""
        ranks = np.arange(self.n)
        return bool(np.all(np.sort(self._recv_from, axis=1) == ranks))

    @property
    def send_to(self) -> np.ndarray:
        """``(num_segments, n)`` inverse permutations; ``ValueError`` if not load balanced."""
        if not self.is_load_balanced:
            raise ValueError(
                "this peer map is not a permutation (fair=False): a rank may send several "
                "copies; use receivers()/send_lists() instead of send_to"
            )
        inv = np.empty_like(self._recv_from)
        ranks = np.arange(self.n)
        for s, row in enumerate(self._recv_from):
            inv[s, row] = ranks
        inv.setflags(write=False)
        return inv

    def receivers(self, segment: int, rank: int) -> list[int]:
        """Ranks (ascending) that receive ``segment`` from ``rank``; never ``rank`` itself."""
        row = self._recv_from[segment]
        hits = np.flatnonzero(row == rank)
        return [int(j) for j in hits if j != rank]

    def send_lists(self, segment: int) -> list[list[int]]:
        """For every rank, the ranks (ascending) it sends ``segment`` to."""
        row = self._recv_from[segment]
        lists: list[list[int]] = [[] for _ in range(self.n)]
        for receiver, sender in enumerate(row.tolist()):
            if receiver != sender:
                lists[sender].append(receiver)
        return lists

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.send_to, self._recv_from))

    def __repr__(self) -> str:
        return f"PeerMap(recv_from={self._recv_from.tolist()})"


def crossover_mean_square_rate(n: int, fair: bool = True) -> float:
    """Exact ``E||y'||^2 / ||y||^2`` for one random crossover round on ``n`` ranks (module doc)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n <= 2:
        return 0.0
    fair_rate = (n - 2) / (2.0 * (n - 1))
    if fair:
        return fair_rate
    return fair_rate - (n - 2) / (4.0 * (n - 1) ** 2)


class CrossoverSchedule:
    """Per-round, per-segment random peer maps shared by all ranks through ``seed``.

    ``CrossoverSchedule(n, num_segments, seed, fair=True, segmented=True)``; round
    ``t``'s map for segment ``s`` is keyed by ``(seed, t, s)`` (``(seed, t, 0)`` when
    ``segmented=False``). All arguments are non-negative integers (``n, num_segments >= 1``).
    """

    push_sum = False
    period = None  # rounds are i.i.d. random, not periodic
    local_size = 1  # no intra-node stage

    def __init__(
        self, n: int, num_segments: int, seed: int, fair: bool = True, segmented: bool = True
    ) -> None:
        n = operator.index(n)
        num_segments = operator.index(num_segments)
        seed = operator.index(seed)
        if n < 1:
            raise ValueError(f"n must be >= 1 (number of ranks), got n={n}")
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got num_segments={num_segments}")
        if seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got seed={seed}")
        self.n = n
        self.num_segments = num_segments
        self.seed = seed
        self.fair = bool(fair)
        self.segmented = bool(segmented)

    def _draw(self, round: int, segment: int) -> np.ndarray:
        bitgen = key_bit_generator(self.seed, round, segment)
        if self.fair:
            return sample_derangement(self.n, bitgen)
        return sample_other_ranks(self.n, bitgen)

    def recv_from(self, round: int) -> np.ndarray:
        """``(num_segments, n)`` int64: ``[s, i]`` = rank that ``i`` receives segment ``s`` from."""
        round = operator.index(round)
        if round < 0:
            raise ValueError(f"round must be >= 0, got round={round}")
        out = np.zeros((self.num_segments, self.n), dtype=np.int64)
        if self.n == 1:
            return out
        if not self.segmented:
            out[:] = self._draw(round, 0)
            return out
        for s in range(self.num_segments):
            out[s] = self._draw(round, s)
        return out

    def peers(self, round: int) -> PeerMap:
        """The :class:`PeerMap` of ``round``."""
        return PeerMap(self.recv_from(round))

    def transfers(self, rank: int, round: int) -> list[Transfer]:
        """Per segment, the ranks that picked ``rank`` and the one it picked (none when ``n == 1``)."""
        rank = operator.index(rank)
        if not 0 <= rank < self.n:
            raise ValueError(f"rank must be in 0..{self.n - 1}, got rank={rank}")
        peers = self.peers(round)
        out = []
        for s in range(self.num_segments):
            source = int(peers.recv_from[s, rank])
            out.append(Transfer(s, tuple(peers.receivers(s, rank)), () if source == rank else (source,)))
        return out

    def mixing_matrices(self, round: int) -> np.ndarray:
        """``(num_segments, n, n)``: ``W_s = (I + P_s) / 2``, ``x_new = W_s @ x``."""
        return np.stack([crossover_matrix(row) for row in self.recv_from(round)])

    def apply(self, x: np.ndarray, round: int) -> np.ndarray:
        """One round on stacked values ``x`` ``(n, d)`` (segments = column blocks), no dense matrix."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"x must have shape (n={self.n}, d), got {x.shape}")
        out = np.empty_like(x)
        for row, cols in zip(self.recv_from(round), segment_slices(x.shape[1], self.num_segments)):
            block = x[:, cols]
            out[:, cols] = 0.5 * (block + block[row])
        return out

    def mean_square_rate(self) -> float:
        """Exact expected one-round contraction of the mean squared disagreement."""
        return crossover_mean_square_rate(self.n, self.fair)

    def describe(self) -> str:
        return (
            f"crossover(n={self.n}, segments={self.num_segments}, seed={self.seed}, "
            f"fair={self.fair}, segmented={self.segmented})"
        )

    def __repr__(self) -> str:
        return (
            f"CrossoverSchedule(n={self.n}, num_segments={self.num_segments}, seed={self.seed}, "
            f"fair={self.fair}, segmented={self.segmented})"
        )
