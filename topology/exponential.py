"""SGP's time-varying directed graphs (push-sum gossip) and the ring.

All graphs here are *rotating circulants*: a graph has a fixed list of offsets
``o_0 .. o_{L-1}`` (distinct and non-zero modulo ``n``) and ``k`` peers per round.
In round ``t`` it uses the offsets ``o_{(t*k + j) mod L}`` for ``j = 0..k-1``, and

    out_peers(i, t) = [(i + o) mod n for those offsets]   (ranks i sends to)
    in_peers(i, t)  = [(i - o) mod n for those offsets]   (ranks i receives from)

in that order, so ``j in out_peers(i, t)`` iff ``i in in_peers(j, t)``. The schedule
repeats after ``L / gcd(k, L)`` rounds. Push-sum (SGP): every rank keeps ``1/(k+1)``
of ``(x, w)``, sends ``1/(k+1)`` to each out-peer and adds what it receives:
``x_new = W @ x`` with ``W[i, i] = 1/(k+1)`` and ``W[(i + o) mod n, i] = 1/(k+1)``.
Every rank has ``k`` in- and ``k`` out-peers, so ``W`` is doubly stochastic, the
weights ``w`` stay 1 and push-sum equals plain averaging over in-peers (which is
also what the Crossover authors' SGP baseline computed). Being circulant, all
rounds share the Fourier eigenvectors, which gives their spectra exactly
(:meth:`RotatingGraph.round_spectrum`).

Graphs (``L_2 = (n - 1).bit_length() = floor(log2(n - 1)) + 1`` = number of powers of two below ``n``)
    * :class:`NPeerExponentialGraph` ``(n, k)``: **SGP's multi-peer graph, what
      ``--sgp-peers k`` builds** (the SGP code's ``NPeerDynamicDirectedExponentialGraph``,
      its default ``--graph_type 5``). With ``b = k + 1`` and ``m`` the number of powers
      ``b^i <= n - 1``, the phone book is ``j * b^i`` for ``i = 0..m-1`` (outer) and
      ``j = 1..k`` (inner), and round ``t`` takes the next ``k`` entries, so wherever no
      offset wraps around ``n`` round ``t`` sends to ``i + j * b^(t mod m)``, ``j = 1..k``:
      one base-``b`` digit per round. ``k = 2`` is the ``j * 3^i`` graph of the Crossover
      authors' SGP baseline. ``k = 1`` is exactly ``ExponentialGraph(n, 1)`` (offsets
      ``2^i``). For ``n = b^m`` the ``m`` rounds of a period average exactly (every
      distance ``0..n-1`` is one sum of digits ``j * b^i``): ``W_{m-1} ... W_0 = 11^T / n``.
      Accepts every ``1 <= k <= n - 1`` (``k = n - 1``: all ranks every round).
    * :class:`ExponentialGraph` ``(n, k)``: offsets ``2^0, 2^1, ..., 2^(L_2 - 1)``
      (forward only), so round ``t`` uses distances ``2^((t*k + j) mod L_2)``, ``j < k``;
      requires ``1 <= k <= L_2`` (hence ``k < n``). For ``k = 1`` this is SGP's 1-peer
      graph (the same as ``NPeerExponentialGraph(n, 1)``); for ``k >= 2`` it takes ``k``
      consecutive powers of two per round, which is *not* SGP's multi-peer graph: it is
      kept as the named alternative ``exponential`` (schedule name) for comparisons.
      ``bidirectional=True`` uses the phone book of the SGP code's
      ``DynamicDirectedExponentialGraph`` (``--graph_type 0``) instead:
      ``+1, -1, +2, -2, +4, ...`` with duplicates modulo ``n`` dropped (first kept).
    * :meth:`ExponentialGraph.all_peers` ``(n)``: the N-peer variant, ``k = L_2``:
      every power-of-two peer in every round (a static graph, period 1).
    * :class:`BipartiteExponentialGraph` ``(n, k)``: SGP's
      ``DynamicBipartiteExponentialGraph``: distances ``1`` and ``1 + 2^i`` for
      ``i = 1..L_2-1`` (all odd), phone book ``+1, -1, +3, -3, +5, -5, +9, -9, ...``
      (duplicates modulo ``n`` dropped). Every edge joins an even ("passive") and
      an odd ("active") rank, which needs ``n`` even; requires ``1 <= k <= len(phone book)``.
    * :class:`RingGraph` ``(n)``: one peer, ``i -> i + 1``; for ``n == 1`` no peer.

Where the SGP code (facebookresearch/stochastic_gradient_push, ``gossip/graph_manager.py``)
differs, and why this package does not follow it:
    * **Duplicates and self-loops.** Its ``_add_peers`` means to skip a peer already in the
      phone book (``if peer not in self.phone_book[rank]``) but the phone book holds ``Edge``
      objects, not ints, so the test is always true and nothing is skipped: every raw offset
      is kept, also when two are equal modulo ``n`` or one is a multiple of ``n`` (the rank
      itself). Here offsets are reduced modulo ``n``, duplicates dropped (first kept, what
      the membership test intended, and what its older ``gossip_module`` version, which
      stored ints, did for its graphs) and multiples of ``n`` dropped. With a self-loop a
      rank is its own out-peer but never its own in-peer (the code's in-peer search skips
      the rank itself), so the share it sends itself is not added back and ``sum(x)``,
      ``sum(w)`` are not conserved (if an edge group ``[r, r]`` can be built at all); a
      duplicate makes a rank use a peer again later in the period (twice in one round only
      next to a self-loop: if ``j * b^i = j' * b^i`` modulo ``n`` with ``j > j'``, then
      ``(j - j') * b^i``, itself an offset of that round, is a multiple of ``n``). Dropping them
      changes which offsets the later rounds take, so the schedules differ for those ``n``
      only. For the multi-peer graph that is ``n`` in 4, 5, 6, 12, 15, 16, 17, 18, 36, ...
      for ``k = 2`` (the raw offsets
      ``j * 3^i`` for ``n`` = 8, 32, 64 are all distinct: there the two agree round for
      round); for ``k = 1`` never (powers of two below ``n`` are distinct). For the
      ``+/-2^i`` phone book (``bidirectional=True``) it is every ``n`` with ``2^(i+1) = 0``
      or ``2^i = +/-2^j`` modulo ``n`` (2, 3, 4, 5, 6, 8, 9, 10, 12, 16, 17, 18, 20, 24, 32, ...);
      for the other ``n`` (7, 11, 13, 14, 15, 19, ...) this phone book is the code's.
    * **Exponent bound.** The code counts exponents with a floating-point
      ``int(log(n - 1, k + 1))``, which is one short when ``n - 1`` is a power of ``k + 1``
      that ``log`` rounds down (``log(243, 3) < 5``: ``n = 244``, ``k = 2``). Here it is exact.
"""

from __future__ import annotations

import math
import operator
from typing import Sequence

import numpy as np

from .mixing import push_sum_matrix
from .schedule import Transfer

__all__ = [
    "RotatingGraph",
    "ExponentialGraph",
    "NPeerExponentialGraph",
    "BipartiteExponentialGraph",
    "RingGraph",
    "num_powers_of_two_below",
]


def num_powers_of_two_below(n: int) -> int:
    """``L_2``: how many of ``1, 2, 4, ...`` are ``< n`` (``floor(log2(n-1)) + 1``; 0 for n <= 1)."""
    return max(0, operator.index(n) - 1).bit_length()


def _dedup_mod(n: int, offsets: Sequence[int]) -> list[int]:
    """Offsets reduced modulo ``n``, first occurrence kept, zeros (self) dropped."""
    seen: list[int] = []
    for o in offsets:
        r = o % n
        if r != 0 and r not in seen:
            seen.append(r)
    return seen


class RotatingGraph:
    """A circulant graph rotating through ``offsets``, ``k`` per round (module doc)."""

    push_sum = True
    num_segments = 1
    local_size = 1  # no intra-node stage

    def __init__(self, n: int, offsets: Sequence[int], k: int, name: str) -> None:
        n = operator.index(n)
        if n < 1:
            raise ValueError(f"n must be >= 1 (number of ranks), got n={n}")
        offs = [operator.index(o) for o in offsets]
        if any(o <= 0 or o >= n for o in offs) or len(set(offs)) != len(offs):
            raise ValueError(f"offsets must be distinct and in 1..n-1, got {offs}")
        k = operator.index(k)
        if offs and not 1 <= k <= len(offs):
            raise ValueError(
                f"k={k} is out of range for {name} with n={n}: need 1 <= k <= {len(offs)} "
                f"(the number of distinct peers it offers)"
            )
        self.n = n
        self.name = name
        self.offsets: tuple[int, ...] = tuple(offs)
        self.k = k if offs else 0
        num = len(offs)
        self.period = num // math.gcd(self.k, num) if num else 1

    @property
    def peers_per_round(self) -> int:
        return self.k

    def offsets_at(self, round: int) -> tuple[int, ...]:
        """The ``k`` offsets used in ``round``: ``offsets[(round*k + j) mod L]``."""
        round = operator.index(round)
        if round < 0:
            raise ValueError(f"round must be >= 0, got round={round}")
        num = len(self.offsets)
        return tuple(self.offsets[(round * self.k + j) % num] for j in range(self.k))

    def _check_rank(self, rank: int) -> int:
        rank = operator.index(rank)
        if not 0 <= rank < self.n:
            raise ValueError(f"rank must be in 0..{self.n - 1}, got rank={rank}")
        return rank

    def out_peers(self, rank: int, round: int) -> list[int]:
        """Ranks that ``rank`` sends to in ``round`` (in offset order)."""
        rank = self._check_rank(rank)
        return [(rank + o) % self.n for o in self.offsets_at(round)]

    def in_peers(self, rank: int, round: int) -> list[int]:
        """Ranks that ``rank`` receives from in ``round`` (in offset order)."""
        rank = self._check_rank(rank)
        return [(rank - o) % self.n for o in self.offsets_at(round)]

    def transfers(self, rank: int, round: int) -> list[Transfer]:
        """The whole model (segment 0): sent to :meth:`out_peers`, received from :meth:`in_peers`."""
        return [Transfer(0, tuple(self.out_peers(rank, round)), tuple(self.in_peers(rank, round)))]

    def out_peer_array(self, round: int) -> np.ndarray:
        """``(n, k)``: row ``i`` = ``out_peers(i, round)``."""
        offs = np.asarray(self.offsets_at(round), dtype=np.int64)
        return (np.arange(self.n)[:, None] + offs[None, :]) % self.n

    def in_peer_array(self, round: int) -> np.ndarray:
        """``(n, k)``: row ``i`` = ``in_peers(i, round)``."""
        offs = np.asarray(self.offsets_at(round), dtype=np.int64)
        return (np.arange(self.n)[:, None] - offs[None, :]) % self.n

    def round_spectrum(self, round: int) -> np.ndarray:
        """Eigenvalues of ``W`` (a circulant) on the Fourier modes ``f = 0..n-1``.

        ``v_f[i] = exp(2 pi i f i / n)`` is an eigenvector of every round, with eigenvalue
        ``(1 + sum_o exp(-2 pi i f o / n)) / (k + 1)`` over the round's offsets ``o``.
        """
        f = np.arange(self.n, dtype=np.int64)
        lam = np.ones(self.n, dtype=complex)
        for o in self.offsets_at(round) if self.k else ():
            lam += np.exp(-2j * np.pi * ((f * o) % self.n) / self.n)
        return lam / (self.k + 1)

    def edges(self, round: int) -> tuple[np.ndarray, np.ndarray]:
        """Directed edges ``(src, dst)`` of ``round`` as two flat arrays."""
        out = self.out_peer_array(round)
        src = np.repeat(np.arange(self.n), out.shape[1])
        return src, out.reshape(-1)

    def mixing_matrix(self, round: int) -> np.ndarray:
        """Column-stochastic push-sum matrix of ``round`` (``x_new = W @ x``)."""
        src, dst = self.edges(round)
        return push_sum_matrix(self.n, src, dst)

    def mixing_matrices(self, round: int) -> np.ndarray:
        """``(1, n, n)``: the single-segment form used by generic code."""
        return self.mixing_matrix(round)[None]

    def apply(self, x: np.ndarray, round: int) -> np.ndarray:
        """``W @ x`` for stacked values ``x`` ``(n, d)`` without a dense matrix."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"x must have shape (n={self.n}, d), got {x.shape}")
        share = 1.0 / (self.k + 1)
        out = share * x
        for o in self.offsets_at(round) if self.k else ():
            out += share * np.roll(x, o, axis=0)  # row i gets x[i - o]: its in-peer
        return out

    def apply_transpose(self, y: np.ndarray, round: int) -> np.ndarray:
        """``W^T @ y`` (used by the spectral estimate)."""
        y = np.asarray(y, dtype=float)
        share = 1.0 / (self.k + 1)
        out = share * y
        for o in self.offsets_at(round) if self.k else ():
            out += share * np.roll(y, -o, axis=0)
        return out

    def describe(self) -> str:
        return f"{self.name}(n={self.n}, k={self.k}, offsets={list(self.offsets)})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def _require_n_at_least_2(n: int, name: str) -> int:
    n = operator.index(n)
    if n < 2:
        raise ValueError(f"n must be >= 2 for {name} (it needs a peer), got n={n}")
    return n


class ExponentialGraph(RotatingGraph):
    """Forward powers of two, ``k`` consecutive ones per round (``bidirectional``: ``+/-2^i``).

    ``k = 1`` is SGP's 1-peer time-varying exponential graph. ``k >= 2`` is *not* SGP's
    multi-peer graph (that is :class:`NPeerExponentialGraph`, which ``--sgp-peers k`` uses);
    it stays available as the ``exponential`` schedule for comparisons.
    """

    def __init__(self, n: int, k: int = 1, bidirectional: bool = False) -> None:
        name = "exponential-bidirectional" if bidirectional else "exponential"
        n = _require_n_at_least_2(n, name)
        powers = [1 << i for i in range(num_powers_of_two_below(n))]
        if bidirectional:
            offsets = _dedup_mod(n, [s * p for p in powers for s in (1, -1)])
        else:
            offsets = powers
        super().__init__(n, offsets, k, name)
        self.bidirectional = bool(bidirectional)

    @classmethod
    def all_peers(cls, n: int) -> "ExponentialGraph":
        """The N-peer variant: all ``L_2`` power-of-two peers in every round."""
        n = _require_n_at_least_2(n, "exponential-all")
        return cls(n, k=num_powers_of_two_below(n))


class NPeerExponentialGraph(RotatingGraph):
    """SGP's multi-peer graph (``NPeerDynamicDirectedExponentialGraph``), what ``--sgp-peers k`` builds.

    Phone book ``j * (k+1)^i`` (``i`` outer over the ``m`` powers ``(k+1)^i <= n - 1``, ``j = 1..k``
    inner), reduced modulo ``n`` without duplicates or multiples of ``n`` (module doc: where this
    differs from the SGP code); ``k`` entries per round. Accepts ``1 <= k <= n - 1``.
    :attr:`raw_offsets` keeps the unreduced list; where it has no two entries equal modulo ``n``
    and none that is a multiple of ``n``, round ``t`` uses exactly ``j * (k+1)^(t mod m)`` modulo ``n``.
    """

    def __init__(self, n: int, k: int = 2) -> None:
        n = _require_n_at_least_2(n, "sgp-npeer")
        k = operator.index(k)
        if not 1 <= k < n:
            raise ValueError(f"k={k} is out of range for sgp-npeer with n={n}: need 1 <= k <= {n - 1}")
        base = k + 1
        top = 0  # largest i with base**i <= n - 1, computed exactly
        while base ** (top + 1) <= n - 1:
            top += 1
        raw = [j * base**i for i in range(top + 1) for j in range(1, k + 1)]
        super().__init__(n, _dedup_mod(n, raw), k, "sgp-npeer")
        self.base = base
        self.num_exponents = top + 1
        self.raw_offsets: tuple[int, ...] = tuple(raw)


class BipartiteExponentialGraph(RotatingGraph):
    """SGP's ``DynamicBipartiteExponentialGraph`` (odd distances; even <-> odd ranks)."""

    def __init__(self, n: int, k: int = 1) -> None:
        n = _require_n_at_least_2(n, "bipartite-exponential")
        if n % 2:
            raise ValueError(
                f"n={n} is odd: bipartite-exponential pairs even (passive) with odd (active) "
                "ranks and needs an even n"
            )
        distances = [1] + [1 + (1 << i) for i in range(1, num_powers_of_two_below(n))]
        offsets = _dedup_mod(n, [s * d for d in distances for s in (1, -1)])
        super().__init__(n, offsets, k, "bipartite-exponential")

    @staticmethod
    def is_passive(rank: int) -> bool:
        """Even ranks are SGP's passive side, odd ranks the active side."""
        return rank % 2 == 0


class RingGraph(RotatingGraph):
    """Directed ring: rank ``i`` sends to ``i + 1`` every round (no peer when ``n == 1``)."""

    def __init__(self, n: int) -> None:
        n = operator.index(n)
        super().__init__(n, [1] if n >= 2 else [], 1, "ring")
