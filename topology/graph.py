"""Static undirected graphs for the per-edge methods (D-SGD, PDMM/ADMM, CADMM).

``Graph(n, edges)`` is an immutable simple undirected graph on the nodes (ranks)
``0..n-1``: no self-loops, each edge once (as ``(i, j)`` or ``(j, i)``). Edges are
kept sorted as ``(i, j)`` with ``i < j``; :meth:`Graph.edge_index` is the position of
edge ``{i, j}`` in that list, the same from both ends, so per-edge state (the duals of
PDMM/ADMM) can be stored in an array of ``num_edges`` rows on both endpoints.

Matrices (dense NumPy, float64)
    ``adjacency()`` ``A``; ``laplacian()`` ``L = D - A`` (``D`` = degrees);
    ``incidence()`` ``B`` ``(num_edges, n)`` with ``+1`` at ``i`` and ``-1`` at ``j`` for
    edge ``(i, j)``, so ``B^T B = L``; ``metropolis_weights()`` ``W`` with
    ``W[i, j] = 1 / (1 + max(d_i, d_j))`` on edges and ``W[i, i] = 1 - sum_j W[i, j]``:
    symmetric, doubly stochastic, positive diagonal; on a connected graph every
    other eigenvalue has modulus < 1, so repeated averaging reaches consensus.

As a schedule (:class:`topology.schedule.PeerSchedule`)
    Every round is the same (``period = 1``): each rank sends its whole model
    (segment 0) to every neighbour, receives theirs and takes ``x_new = W @ x`` with
    the Metropolis-Hastings weights (D-SGD's gossip step).

Random graphs (the same graph for the same seed on every machine)
    Attempt ``a = 0, 1, ...`` draws from ``PCG64(SeedSequence([seed, a]))`` and uses only
    raw 64-bit words (stable by NumPy's NEP 19, as in :mod:`topology.derangement`); the
    first connected draw is returned, ``ValueError`` after ``max_tries`` attempts.

    * :meth:`Graph.random_regular` ``(n, d, seed)``: the ``n d`` half-edges ("stubs")
      are ordered by a stable argsort of raw words and paired consecutively; pairs
      that would make a self-loop or a repeated edge go back and are re-paired the
      same way until none is left (the attempt fails when no allowed pair remains).
    * :meth:`Graph.erdos_renyi` ``(n, p, seed)``: pairs ``(i, j)``, ``i < j``, in
      lexicographic order each take one raw word ``u``; the edge exists iff
      ``u < floor(p * 2^64)``.

Edge-list files (:meth:`Graph.from_edge_file`)
    One edge ``i j`` per line (decimal node numbers separated by white space); ``#``
    starts a comment; blank lines are skipped. A bad line raises ``ValueError``
    naming the file, the line number and the reason.
"""

from __future__ import annotations

import math
import operator
import os
import re
from typing import Iterable, Sequence

import numpy as np

from .schedule import Transfer

__all__ = ["Graph", "GRAPH_KINDS", "make_graph"]

#: Graph kinds :func:`make_graph` (and ``make_schedule("graph", ...)``) builds from ``n``.
GRAPH_KINDS = ("ring", "complete", "star", "line", "grid", "torus", "regular", "erdos-renyi", "exponential")

_MAX_PAIRING_PASSES = 100  # re-pairing passes of one random-regular attempt
_NODE = re.compile(r"\d+", re.ASCII)


def _index(name: str, value: object, minimum: int) -> int:
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}") from None
    if v < minimum:
        raise ValueError(f"{name}={v} is invalid: it must be an integer >= {minimum}")
    return v


def _attempt_bit_generator(seed: int, attempt: int) -> np.random.PCG64:
    return np.random.PCG64(np.random.SeedSequence([seed, attempt]))


class Graph:
    """Immutable simple undirected graph on ``0..n-1``; also a static :class:`PeerSchedule` (module doc)."""

    num_segments = 1
    local_size = 1
    push_sum = False
    period = 1

    __slots__ = ("_n", "_edges", "_edge_ids", "_neighbours", "_name", "_self_weight", "_edge_weight")

    def __init__(self, n: int, edges: Iterable[Sequence[int]], name: str = "graph") -> None:
        n = _index("n", n, 1)
        ids: dict[tuple[int, int], int] = {}
        for edge in edges:
            try:
                a, b = edge
            except (TypeError, ValueError):
                raise ValueError(f"edge {edge!r} is not a pair of nodes (i, j)") from None
            try:
                i, j = operator.index(a), operator.index(b)
            except TypeError:
                raise ValueError(f"edge {edge!r}: nodes must be integers in 0..{n - 1}") from None
            for v in (i, j):
                if not 0 <= v < n:
                    raise ValueError(f"edge ({i}, {j}): node {v} is out of range: nodes are 0..{n - 1}")
            if i == j:
                raise ValueError(f"edge ({i}, {j}) is a self-loop: an edge joins two different nodes")
            key = (min(i, j), max(i, j))
            if key in ids:
                raise ValueError(f"edge ({i}, {j}) is a duplicate of edge {key}: give each undirected edge once")
            ids[key] = 0
        self._n = n
        self._edges: tuple[tuple[int, int], ...] = tuple(sorted(ids))
        self._edge_ids = {e: k for k, e in enumerate(self._edges)}
        nbrs: list[list[int]] = [[] for _ in range(n)]
        for i, j in self._edges:
            nbrs[i].append(j)
            nbrs[j].append(i)
        self._neighbours = tuple(tuple(sorted(row)) for row in nbrs)
        self._name = str(name)
        deg = np.array([len(row) for row in nbrs], dtype=np.int64)
        ends = np.array(self._edges, dtype=np.int64).reshape(-1, 2)
        w = 1.0 / (1.0 + np.maximum(deg[ends[:, 0]], deg[ends[:, 1]]))
        self_w = np.ones(n)
        np.subtract.at(self_w, ends[:, 0], w)
        np.subtract.at(self_w, ends[:, 1], w)
        w.setflags(write=False)
        self_w.setflags(write=False)
        self._edge_weight, self._self_weight = w, self_w

    # --- structure -------------------------------------------------------------------

    @property
    def n(self) -> int:
        return self._n

    @property
    def name(self) -> str:
        return self._name

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """All edges ``(i, j)``, ``i < j``, sorted; edge ``e`` is ``edges[e]``."""
        return self._edges

    @property
    def num_edges(self) -> int:
        return len(self._edges)

    def _node(self, i: int) -> int:
        i = operator.index(i)
        if not 0 <= i < self._n:
            raise ValueError(f"node {i} is out of range: nodes are 0..{self._n - 1}")
        return i

    def neighbours(self, i: int) -> tuple[int, ...]:
        """The neighbours of node ``i``, ascending."""
        return self._neighbours[self._node(i)]

    def degree(self, i: int) -> int:
        return len(self._neighbours[self._node(i)])

    def degrees(self) -> np.ndarray:
        """``(n,)`` int64 degrees."""
        return np.array([len(row) for row in self._neighbours], dtype=np.int64)

    def has_edge(self, i: int, j: int) -> bool:
        i, j = self._node(i), self._node(j)
        return (min(i, j), max(i, j)) in self._edge_ids

    def edge_index(self, i: int, j: int) -> int:
        """Position of edge ``{i, j}`` in :attr:`edges` (same for ``(j, i)``); ``ValueError`` if absent."""
        i, j = self._node(i), self._node(j)
        try:
            return self._edge_ids[(min(i, j), max(i, j))]
        except KeyError:
            raise ValueError(f"{{{min(i, j)}, {max(i, j)}}} is not an edge of {self.describe()}") from None

    def components(self) -> list[tuple[int, ...]]:
        """Connected components, each ascending, ordered by their smallest node."""
        seen = [False] * self._n
        out: list[tuple[int, ...]] = []
        for start in range(self._n):
            if seen[start]:
                continue
            seen[start] = True
            stack, comp = [start], [start]
            while stack:
                for j in self._neighbours[stack.pop()]:
                    if not seen[j]:
                        seen[j] = True
                        stack.append(j)
                        comp.append(j)
            out.append(tuple(sorted(comp)))
        return out

    def is_connected(self) -> bool:
        return len(self.components()) == 1

    # --- matrices --------------------------------------------------------------------

    def _ends(self) -> tuple[np.ndarray, np.ndarray]:
        ends = np.array(self._edges, dtype=np.int64).reshape(-1, 2)
        return ends[:, 0], ends[:, 1]

    def adjacency(self) -> np.ndarray:
        """``(n, n)`` symmetric 0/1 adjacency matrix."""
        i, j = self._ends()
        a = np.zeros((self._n, self._n))
        a[i, j] = a[j, i] = 1.0
        return a

    def laplacian(self) -> np.ndarray:
        """``L = D - A``: symmetric, positive semi-definite, ``L 1 = 0``."""
        a = self.adjacency()
        return np.diag(a.sum(axis=1)) - a

    def incidence(self) -> np.ndarray:
        """``(num_edges, n)`` oriented incidence ``B``: row ``e`` = ``+1`` at ``i``, ``-1`` at ``j``."""
        i, j = self._ends()
        b = np.zeros((self.num_edges, self._n))
        rows = np.arange(self.num_edges)
        b[rows, i], b[rows, j] = 1.0, -1.0
        return b

    def metropolis_weights(self) -> np.ndarray:
        """``(n, n)`` Metropolis-Hastings mixing matrix (module doc): symmetric, doubly stochastic."""
        i, j = self._ends()
        w = np.diag(self._self_weight)
        w[i, j] = w[j, i] = self._edge_weight
        return w

    # --- PeerSchedule ----------------------------------------------------------------

    def transfers(self, rank: int, round: int) -> list[Transfer]:
        """The whole model (segment 0) to and from every neighbour, every round."""
        rank = operator.index(rank)
        if not 0 <= rank < self._n:
            raise ValueError(f"rank must be in 0..{self._n - 1}, got rank={rank}")
        if operator.index(round) < 0:
            raise ValueError(f"round must be >= 0, got round={round}")
        peers = self._neighbours[rank]
        return [Transfer(0, peers, peers)]

    def mixing_matrices(self, round: int) -> np.ndarray:
        """``(1, n, n)``: the Metropolis-Hastings weights (the same every round)."""
        if operator.index(round) < 0:
            raise ValueError(f"round must be >= 0, got round={round}")
        return self.metropolis_weights()[None]

    def apply(self, x: np.ndarray, round: int = 0) -> np.ndarray:
        """``W @ x`` for stacked values ``x`` ``(n, d)``, edge by edge (no dense matrix)."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[0] != self._n:
            raise ValueError(f"x must have shape (n={self._n}, d), got {x.shape}")
        i, j = self._ends()
        w = self._edge_weight[:, None]
        out = self._self_weight[:, None] * x
        np.add.at(out, i, w * x[j])
        np.add.at(out, j, w * x[i])
        return out

    def apply_transpose(self, y: np.ndarray, round: int = 0) -> np.ndarray:
        """``W^T @ y = W @ y`` (``W`` is symmetric; used by the spectral estimate)."""
        return self.apply(y, round)

    def describe(self) -> str:
        deg = self.degrees()
        return (
            f"graph({self._name}, n={self._n}, edges={self.num_edges}, "
            f"degrees {int(deg.min())}..{int(deg.max())})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self._n == other._n and self._edges == other._edges

    def __hash__(self) -> int:
        return hash((self._n, self._edges))

    def __repr__(self) -> str:
        return f"Graph(n={self._n}, edges={[list(e) for e in self._edges]}, name={self._name!r})"

    # --- constructors ----------------------------------------------------------------

    @classmethod
    def ring(cls, n: int) -> Graph:
        """Cycle ``i -- i+1 (mod n)`` (one edge for ``n = 2``, none for ``n = 1``)."""
        n = _index("n", n, 1)
        edges = [(i, (i + 1) % n) for i in range(n if n > 2 else n - 1)]
        return cls(n, edges, "ring")

    @classmethod
    def exponential(cls, n: int) -> Graph:
        """The static exponential graph: ``i -- i + 2^k (mod n)`` for every ``2^k < n`` (degree
        about ``2 log2 n``; the undirected, fixed form of SGP's time-varying graph)."""
        n = _index("n", n, 1)
        edges = {tuple(sorted((i, (i + 2 ** k) % n))) for i in range(n) for k in range(max(n - 1, 1).bit_length())
                 if 2 ** k < n and (i + 2 ** k) % n != i}
        return cls(n, sorted(edges), "exponential")

    @classmethod
    def line(cls, n: int) -> Graph:
        """Path ``0 -- 1 -- ... -- n-1``."""
        n = _index("n", n, 1)
        return cls(n, [(i, i + 1) for i in range(n - 1)], "line")

    @classmethod
    def complete(cls, n: int) -> Graph:
        """Every pair of nodes joined."""
        n = _index("n", n, 1)
        return cls(n, [(i, j) for i in range(n) for j in range(i + 1, n)], "complete")

    @classmethod
    def star(cls, n: int, center: int = 0) -> Graph:
        """``center`` joined to every other node."""
        n = _index("n", n, 1)
        center = _index("center", center, 0)
        if center >= n:
            raise ValueError(f"center={center} is out of range: nodes are 0..{n - 1}")
        return cls(n, [(center, j) for j in range(n) if j != center], "star")

    @classmethod
    def grid(cls, rows: int, cols: int) -> Graph:
        """``rows x cols`` grid, node ``r * cols + c``, 4-neighbourhood without wrap-around."""
        return cls._lattice(rows, cols, wrap=False)

    @classmethod
    def torus(cls, rows: int, cols: int) -> Graph:
        """``rows x cols`` grid with wrap-around (a side of length 2 gives one edge, not two)."""
        return cls._lattice(rows, cols, wrap=True)

    @classmethod
    def _lattice(cls, rows: int, cols: int, wrap: bool) -> Graph:
        rows, cols = _index("rows", rows, 1), _index("cols", cols, 1)
        edges: set[tuple[int, int]] = set()
        for r in range(rows):
            for c in range(cols):
                here = r * cols + c
                for rr, cc in ((r, c + 1), (r + 1, c)):
                    if wrap:
                        rr, cc = rr % rows, cc % cols
                    if rr < rows and cc < cols and (rr, cc) != (r, c):
                        there = rr * cols + cc
                        edges.add((min(here, there), max(here, there)))
        kind = "torus" if wrap else "grid"
        return cls(rows * cols, sorted(edges), f"{kind} {rows}x{cols}")

    @classmethod
    def random_regular(cls, n: int, d: int, seed: int = 0, max_tries: int = 100) -> Graph:
        """Connected random ``d``-regular graph drawn from ``seed`` (module doc)."""
        n, d = _index("n", n, 1), _index("d", d, 0)
        seed, max_tries = _index("seed", seed, 0), _index("max_tries", max_tries, 1)
        if d >= n or (n * d) % 2:
            raise ValueError(
                f"d={d} is invalid for n={n}: a d-regular graph needs d < n and n * d even"
            )
        if (n > 1 and d == 0) or (n > 2 and d == 1):
            raise ValueError(f"d={d} is invalid for n={n}: a connected regular graph needs d >= 2 (n >= 3)")
        name = f"regular d={d} seed={seed}"
        if d == n - 1:
            return cls(n, cls.complete(n).edges, name)
        for attempt in range(max_tries):
            edges = _try_regular(n, d, _attempt_bit_generator(seed, attempt))
            if edges is not None:
                graph = cls(n, sorted(edges), name)
                if graph.is_connected():
                    return graph
        raise ValueError(
            f"no connected {d}-regular graph on {n} nodes in max_tries={max_tries} attempts "
            f"(seed={seed}): raise d or max_tries"
        )

    @classmethod
    def erdos_renyi(cls, n: int, p: float, seed: int = 0, max_tries: int = 100) -> Graph:
        """Connected Erdos-Renyi ``G(n, p)`` graph drawn from ``seed`` (module doc)."""
        n = _index("n", n, 1)
        seed, max_tries = _index("seed", seed, 0), _index("max_tries", max_tries, 1)
        p = float(p)
        if not 0.0 <= p <= 1.0 or (n > 1 and p == 0.0):
            raise ValueError(f"p={p} is invalid: the edge probability must be in (0, 1] (0 only for n=1)")
        threshold = int(p * 2.0**64)  # exact: p * 2^64 only shifts the exponent
        name = f"erdos-renyi p={p:g} seed={seed}"
        for attempt in range(max_tries):
            bitgen = _attempt_bit_generator(seed, attempt)
            edges = []
            for i in range(n - 1):
                words = bitgen.random_raw(n - 1 - i)  # pairs (i, i+1) .. (i, n-1)
                hits = np.arange(words.size) if threshold >> 64 else np.flatnonzero(words < np.uint64(threshold))
                edges.extend((i, i + 1 + int(h)) for h in hits)
            graph = cls(n, edges, name)
            if graph.is_connected():
                return graph
        raise ValueError(
            f"no connected G(n={n}, p={p:g}) graph in max_tries={max_tries} attempts (seed={seed}): "
            f"raise p (connected with high probability above ln(n)/n = {math.log(n) / n:.3g})"
        )

    @classmethod
    def from_edge_file(cls, path: str | os.PathLike, n: int | None = None) -> Graph:
        """Read an edge list (module doc); ``n`` defaults to the largest node number + 1."""
        if n is not None:
            n = _index("n", n, 1)
        edges: list[tuple[int, int]] = []
        first_line: dict[tuple[int, int], int] = {}
        with open(path, encoding="utf-8") as fh:
            for lineno, raw in enumerate(fh, 1):
                text = raw.split("#", 1)[0].strip()
                if not text:
                    continue

                def bad(reason: str) -> ValueError:
                    return ValueError(f"{os.fspath(path)}, line {lineno}: {reason}: {raw.strip()!r}")

                fields = text.split()
                if len(fields) != 2:
                    raise bad(f"expected one edge 'i j' (two node numbers), found {len(fields)} fields")
                if not all(_NODE.fullmatch(f) for f in fields):
                    raise bad("node numbers must be integers >= 0")
                i, j = int(fields[0]), int(fields[1])
                if i == j:
                    raise bad(f"self-loop {i} {i} (an edge joins two different nodes)")
                if n is not None and max(i, j) >= n:
                    raise bad(f"node {max(i, j)} is out of range: nodes are 0..{n - 1} (n={n})")
                key = (min(i, j), max(i, j))
                if key in first_line:
                    raise bad(f"duplicate of the edge on line {first_line[key]}")
                first_line[key] = lineno
                edges.append(key)
        if n is None:
            if not edges:
                raise ValueError(f"{os.fspath(path)}: no edges: give n to read a graph without edges")
            n = max(max(e) for e in edges) + 1
        return cls(n, edges, f"file {os.fspath(path)}")


def _try_regular(n: int, d: int, bitgen: np.random.PCG64) -> set[tuple[int, int]] | None:
    """One attempt of the stub pairing (module doc); ``None`` when it gets stuck."""
    edges: set[tuple[int, int]] = set()
    stubs = np.repeat(np.arange(n, dtype=np.int64), d)
    for _ in range(_MAX_PAIRING_PASSES):
        if not stubs.size:
            return edges
        order = np.argsort(bitgen.random_raw(stubs.size), kind="stable")
        left: list[int] = []
        for a, b in stubs[order].reshape(-1, 2).tolist():
            key = (a, b) if a < b else (b, a)
            if a != b and key not in edges:
                edges.add(key)
            else:
                left += (a, b)
        nodes = sorted(set(left))
        if left and not any((u, v) not in edges for k, u in enumerate(nodes) for v in nodes[k + 1 :]):
            return None
        stubs = np.array(sorted(left), dtype=np.int64)
    return None


def _near_square(n: int) -> tuple[int, int]:
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def make_graph(kind: str, n: int, *, k: int | None = None, seed: int = 0) -> Graph:
    """Graph ``kind`` (:data:`GRAPH_KINDS`) on ``n`` nodes.

    ``grid``/``torus``: the most square ``rows x cols = n`` (``rows <= cols``; a prime
    ``n`` gives a line / ring). ``regular``: degree ``k``; ``erdos-renyi``: expected
    degree ``k`` (``p = k / (n - 1)``); both drawn from ``seed``. ``k`` applies to these two only.
    """
    if kind not in GRAPH_KINDS:
        raise ValueError(f"unknown graph {kind!r}: choose from {', '.join(GRAPH_KINDS)}")
    n = _index("n", n, 1)
    if kind in ("regular", "erdos-renyi"):
        if k is None:
            raise ValueError(f"graph {kind} needs k (the {'expected ' if kind != 'regular' else ''}degree)")
        k = _index("k", k, 0)
        if kind == "regular":
            return Graph.random_regular(n, k, seed)
        if n > 1 and not 1 <= k <= n - 1:
            raise ValueError(
                f"k={k} is invalid for erdos-renyi with n={n}: the expected degree must be in 1..{n - 1}"
            )
        return Graph.erdos_renyi(n, k / (n - 1) if n > 1 else 1.0, seed)
    if k is not None:
        raise ValueError(f"k={k} does not apply to graph {kind} (only regular, erdos-renyi)")
    if kind in ("grid", "torus"):
        rows, cols = _near_square(n)
        return Graph.grid(rows, cols) if kind == "grid" else Graph.torus(rows, cols)
    return {"ring": Graph.ring, "complete": Graph.complete, "star": Graph.star, "line": Graph.line,
            "exponential": Graph.exponential}[kind](n)
