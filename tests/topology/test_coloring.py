"""Edge colourings (:mod:`topology.coloring`): proper, deterministic, few colours."""

from __future__ import annotations

import pytest

from topology import Graph, make_graph
from topology.coloring import edge_colouring, is_proper_colouring, num_colours


def _check(graph: Graph) -> dict[tuple[int, int], int]:
    colours = edge_colouring(graph)
    assert list(colours) == list(graph.edges)
    assert is_proper_colouring(graph, colours)
    max_degree = int(graph.degrees().max())
    assert max_degree <= num_colours(colours) <= max_degree + 1
    assert set(colours.values()) == set(range(num_colours(colours)))  # renumbered 0..c-1
    assert edge_colouring(graph) == colours  # deterministic
    return colours


@pytest.mark.parametrize("n", range(2, 30))
def test_ring_two_colours_when_even_three_when_odd(n):
    expected = 1 if n == 2 else (2 if n % 2 == 0 else 3)
    assert num_colours(_check(make_graph("ring", n))) == expected


@pytest.mark.parametrize("n", range(2, 24))
def test_complete_graph_is_optimal(n):
    assert num_colours(_check(make_graph("complete", n))) == (n - 1 if n % 2 == 0 else n)


@pytest.mark.parametrize("kind", ["line", "star", "grid"])
@pytest.mark.parametrize("n", range(2, 26))
def test_bipartite_graphs_get_max_degree_colours(kind, n):
    graph = make_graph(kind, n)
    assert num_colours(_check(graph)) == int(graph.degrees().max())


@pytest.mark.parametrize("rows,cols", [(2, 2), (2, 4), (4, 4), (4, 6), (6, 6), (3, 3), (3, 4), (3, 5), (5, 5), (2, 3)])
def test_torus(rows, cols):
    graph = Graph.torus(rows, cols)
    colours = _check(graph)
    if rows % 2 == 0 and cols % 2 == 0:  # bipartite
        assert num_colours(colours) == int(graph.degrees().max())


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_random_regular_many_n_and_seeds(d):
    for n in range(d + 1, 40):
        if n * d % 2:
            continue
        for seed in range(4):
            _check(make_graph("regular", n, k=d, seed=seed))


@pytest.mark.parametrize("k", [4, 6, 10])
def test_erdos_renyi_many_n_and_seeds(k):
    for n in range(3, 40, 3):
        for seed in range(4):
            _check(make_graph("erdos-renyi", n, k=min(k, n - 1), seed=seed))


def test_edgeless_and_single_edge():
    assert edge_colouring(Graph(1, [])) == {}
    assert edge_colouring(Graph(3, [])) == {}
    assert edge_colouring(Graph(2, [(1, 0)])) == {(0, 1): 0}


def test_is_proper_colouring_rejects_clashes_and_wrong_edges():
    ring = make_graph("ring", 4)
    assert not is_proper_colouring(ring, {e: 0 for e in ring.edges})
    assert not is_proper_colouring(ring, {(0, 1): 0})


def test_misra_gries_alone_stays_within_max_degree_plus_one():
    """The bound does not rest on the other methods: Misra-Gries by itself, on graphs where greedy needs more."""
    from topology.coloring import _greedy, _misra_gries

    greedy_worse = 0
    graphs = [make_graph("complete", n) for n in range(2, 14)]
    graphs += [make_graph("regular", n, k=d, seed=s) for d in (3, 4, 5) for n in range(d + 1, 30)
               if n * d % 2 == 0 for s in range(3)]
    graphs += [make_graph("erdos-renyi", n, k=min(6, n - 1), seed=s) for n in range(3, 30, 2) for s in range(3)]
    for graph in graphs:
        max_degree = int(graph.degrees().max())
        colours = _misra_gries(graph.n, graph.edges)
        assert is_proper_colouring(graph, colours)
        assert num_colours(colours) <= max_degree + 1
        greedy_worse += num_colours(_greedy(graph.n, graph.edges)) > max_degree + 1
    assert greedy_worse > 0  # the graphs do exercise the bound
