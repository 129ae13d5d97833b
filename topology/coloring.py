"""Proper edge colourings of a :class:`~topology.graph.Graph` (slots of the peer-to-peer family).

A proper edge colouring gives every edge a colour so that the edges at one node all
differ: if the colours are the steps of a round, each node exchanges with at most one
neighbour per step. Vizing's theorem says ``max_degree`` or ``max_degree + 1`` colours
suffice; :func:`edge_colouring` always stays within ``max_degree + 1`` (Misra & Gries,
"A constructive proof of Vizing's theorem", IPL 1992) and takes the fewest colours of
three deterministic methods:

* greedy in the order of :attr:`Graph.edges` (each edge gets the smallest colour free at
  both ends): optimal on rings, paths and stars, ``n - 1`` on the complete graph for even ``n``;
* on bipartite graphs, alternating-path recolouring with exactly ``max_degree`` colours
  (König's theorem): even rings, even tori, grids, trees;
* Misra-Gries: at most ``max_degree + 1`` on any graph;
* on the complete graph, the round-robin ("circle") schedule: ``n - 1`` colours for even
  ``n``, ``n`` for odd ``n`` (both optimal).

Colours are renumbered ``0, 1, ...`` in the order they first appear along :attr:`Graph.edges`,
so the result depends on the graph only (not on dict or set order).
"""

from __future__ import annotations

from typing import Callable, Sequence

from .graph import Graph

__all__ = ["edge_colouring", "num_colours", "is_proper_colouring"]

Edge = tuple[int, int]
Colouring = dict[Edge, int]


def edge_colouring(graph: Graph) -> Colouring:
    """Proper edge colouring of ``graph``: ``{(i, j): colour}`` for every edge ``i < j``.

    Deterministic; uses at most ``max_degree + 1`` colours (module doc), ``max_degree`` on
    bipartite graphs.
    """
    edges = graph.edges
    if not edges:
        return {}
    methods: list[Callable[[int, Sequence[Edge]], Colouring]] = []
    if _is_bipartite(graph):
        methods.append(_bipartite)
    if 2 * graph.num_edges == graph.n * (graph.n - 1):
        methods.append(_round_robin)
    methods += [_greedy, _misra_gries]
    best: Colouring | None = None
    for method in methods:
        colours = _renumbered(edges, method(graph.n, edges))
        if best is None or num_colours(colours) < num_colours(best):
            best = colours
    assert best is not None and is_proper_colouring(graph, best)
    return best


def num_colours(colouring: Colouring) -> int:
    """Number of distinct colours used."""
    return len(set(colouring.values()))


def is_proper_colouring(graph: Graph, colouring: Colouring) -> bool:
    """True if ``colouring`` colours exactly ``graph``'s edges and no two edges at a node share a colour."""
    if set(colouring) != set(graph.edges):
        return False
    seen: set[tuple[int, int]] = set()  # (node, colour)
    for (i, j), c in colouring.items():
        for end in ((i, c), (j, c)):
            if end in seen:
                return False
            seen.add(end)
    return True


def _renumbered(edges: Sequence[Edge], colours: Colouring) -> Colouring:
    names: dict[int, int] = {}
    return {e: names.setdefault(colours[e], len(names)) for e in edges}


def _is_bipartite(graph: Graph) -> bool:
    side = [-1] * graph.n
    for start in range(graph.n):
        if side[start] >= 0:
            continue
        side[start], stack = 0, [start]
        while stack:
            u = stack.pop()
            for v in graph.neighbours(u):
                if side[v] < 0:
                    side[v] = 1 - side[u]
                    stack.append(v)
                elif side[v] == side[u]:
                    return False
    return True


class _Colours:
    """Partial edge colouring with, per node, ``colour -> neighbour`` of its coloured edges."""

    def __init__(self, n: int) -> None:
        self.at: list[dict[int, int]] = [{} for _ in range(n)]

    def colour(self, u: int, v: int) -> int | None:
        return next((c for c, w in self.at[u].items() if w == v), None)

    def free(self, u: int, c: int) -> bool:
        return c not in self.at[u]

    def lowest_free(self, u: int) -> int:
        c = 0
        while c in self.at[u]:
            c += 1
        return c

    def set(self, u: int, v: int, c: int) -> None:
        self.clear(u, v)
        assert self.free(u, c) and self.free(v, c), "not a proper colouring"
        self.at[u][c] = v
        self.at[v][c] = u

    def clear(self, u: int, v: int) -> None:
        old = self.colour(u, v)
        if old is not None:
            del self.at[u][old], self.at[v][old]

    def swap_path(self, start: int, a: int, b: int) -> None:
        """Swap colours ``a`` and ``b`` along the maximal path from ``start`` that begins with colour ``a``."""
        path: list[tuple[int, int, int]] = []
        u, c = start, a
        while c in self.at[u]:
            v = self.at[u][c]
            path.append((u, v, c))
            u, c = v, (b if c == a else a)
        for u, v, _ in path:
            self.clear(u, v)
        for u, v, c in path:
            self.set(u, v, b if c == a else a)

    def result(self, edges: Sequence[Edge]) -> Colouring:
        out = {}
        for i, j in edges:
            c = self.colour(i, j)
            assert c is not None
            out[(i, j)] = c
        return out


def _greedy(n: int, edges: Sequence[Edge]) -> Colouring:
    used: list[set[int]] = [set() for _ in range(n)]
    out: Colouring = {}
    for i, j in edges:
        c = 0
        while c in used[i] or c in used[j]:
            c += 1
        out[(i, j)] = c
        used[i].add(c)
        used[j].add(c)
    return out


def _round_robin(n: int, edges: Sequence[Edge]) -> Colouring:
    """Complete graph: ``(i + j) mod n`` for odd ``n``; for even ``n``, node ``n - 1`` is the
    circle's centre: ``(i + j) mod (n - 1)``, and ``2 i mod (n - 1)`` for the edge ``(i, n - 1)``."""
    if n % 2:
        return {(i, j): (i + j) % n for i, j in edges}
    m = n - 1
    return {(i, j): (2 * i if j == m else i + j) % m for i, j in edges}


def _bipartite(n: int, edges: Sequence[Edge]) -> Colouring:
    """``max_degree`` colours on a bipartite graph: colour ``a`` free at ``u``; if it is taken at
    ``v``, swap ``a`` with ``b`` (free at ``v``) along the alternating path from ``v``, which cannot
    reach ``u`` in a bipartite graph."""
    cols = _Colours(n)
    for u, v in edges:
        a, b = cols.lowest_free(u), cols.lowest_free(v)
        if not cols.free(v, a):
            cols.swap_path(v, a, b)
        cols.set(u, v, a)
    return cols.result(edges)


def _misra_gries(n: int, edges: Sequence[Edge]) -> Colouring:
    """Misra-Gries: at most ``max_degree + 1`` colours on any simple graph."""
    cols = _Colours(n)
    for u, v in edges:
        # a maximal fan of u starting at v: colour(u, fan[k+1]) is free at fan[k]
        fan, in_fan = [v], {v}
        while True:
            last = fan[-1]
            nxt = next((w for c, w in sorted(cols.at[u].items()) if w not in in_fan and cols.free(last, c)), None)
            if nxt is None:
                break
            fan.append(nxt)
            in_fan.add(nxt)
        c, d = cols.lowest_free(u), cols.lowest_free(fan[-1])
        if not cols.free(u, d):
            cols.swap_path(u, d, c)  # the cd-path from u: afterwards d is free at u
        # the first w on the fan with d free whose prefix is still a fan
        k = 0
        while not cols.free(fan[k], d):
            k += 1
            nxt_colour = cols.colour(u, fan[k])
            assert nxt_colour is not None and cols.free(fan[k - 1], nxt_colour), "Misra-Gries fan broken"
        for m in range(k):  # rotate the fan prefix, then colour (u, fan[k]) with d
            shifted = cols.colour(u, fan[m + 1])
            assert shifted is not None
            cols.clear(u, fan[m + 1])
            cols.set(u, fan[m], shifted)
        cols.set(u, fan[k], d)
    return cols.result(edges)
