"""Static graphs: structure and matrices against the math, constructors, random graphs
from a seed, edge-list files, and the graph schedule of the registry."""

from __future__ import annotations

import re

import numpy as np
import pytest

from topology import (
    GRAPH_KINDS,
    Graph,
    PeerSchedule,
    check_transfers,
    is_doubly_stochastic,
    make_graph,
    make_schedule,
    spectral_gap,
)

GRAPHS = [
    Graph(1, []),
    Graph(5, [(0, 1), (3, 2)]),  # disconnected, isolated node 4
    Graph(4, [(2, 0), (0, 1), (3, 1)]),
    *(Graph.ring(n) for n in (2, 3, 7)),
    Graph.line(6),
    Graph.complete(5),
    Graph.star(6, center=2),
    Graph.grid(3, 4),
    Graph.torus(2, 5),
    Graph.torus(3, 4),
    Graph.random_regular(12, 3, seed=1),
    Graph.erdos_renyi(11, 0.3, seed=2),
]


@pytest.mark.parametrize("g", GRAPHS, ids=repr)
def test_structure_and_matrices_agree_with_the_math(g):
    n, edges = g.n, g.edges
    assert list(edges) == sorted(edges) and all(i < j for i, j in edges)
    assert int(g.degrees().sum()) == 2 * g.num_edges == 2 * len(edges)
    for e, (i, j) in enumerate(edges):
        assert g.edge_index(i, j) == g.edge_index(j, i) == e
    for i in range(n):
        assert list(g.neighbours(i)) == sorted(g.neighbours(i)) and g.degree(i) == len(g.neighbours(i))
        assert all(i in g.neighbours(j) and g.has_edge(j, i) for j in g.neighbours(i))
    a, lap, b = g.adjacency(), g.laplacian(), g.incidence()
    np.testing.assert_array_equal(a, a.T)
    np.testing.assert_array_equal(a.sum(axis=1), g.degrees())
    np.testing.assert_array_equal(lap, np.diag(g.degrees()) - a)
    np.testing.assert_array_equal(b.T @ b, lap)
    eig = np.linalg.eigvalsh(lap)
    assert eig[0] > -1e-12 and np.allclose(lap.sum(axis=1), 0)
    # zero eigenvalues of L = connected components; lambda_2 > 0 iff connected
    comps = g.components()
    assert sorted(v for c in comps for v in c) == list(range(n))
    assert int(np.sum(eig < 1e-9)) == len(comps)
    assert g.is_connected() == (len(comps) == 1) == (n == 1 or eig[1] > 1e-9)
    w = g.metropolis_weights()
    np.testing.assert_array_equal(w, w.T)
    assert is_doubly_stochastic(w) and np.all(np.diag(w) > 0)
    np.testing.assert_array_equal(w != 0, (a + np.eye(n)) != 0)
    np.testing.assert_allclose(w[a == 1], [1 / (1 + max(g.degree(i), g.degree(j))) for i, j in zip(*np.nonzero(a))])
    # as a schedule: the same transfers every round, W @ x without the dense matrix
    assert isinstance(g, PeerSchedule) and (g.num_segments, g.period, g.push_sum) == (1, 1, False)
    for t in (0, 3):
        check_transfers(g, t)
        np.testing.assert_array_equal(g.mixing_matrices(t), w[None])
    x = np.random.default_rng(0).standard_normal((n, 3))
    np.testing.assert_allclose(g.apply(x, 0), w @ x, atol=1e-14)
    if n > 1:
        assert (spectral_gap(g) > 1e-9) == g.is_connected()


@pytest.mark.parametrize("n", [4, 5, 8, 13])
def test_ring_spectra_in_closed_form(n):
    f = np.arange(n)
    np.testing.assert_allclose(np.linalg.eigvalsh(Graph.ring(n).laplacian()), np.sort(2 - 2 * np.cos(2 * np.pi * f / n)),
                               atol=1e-12)
    # Metropolis weights of a ring: W = (I + A) / 3, eigenvalues (1 + 2 cos(2 pi f / n)) / 3
    assert spectral_gap(Graph.ring(n)) == pytest.approx(1 - ((1 + 2 * np.cos(2 * np.pi / n)) / 3) ** 2, abs=1e-12)


def test_known_graphs():
    assert Graph.complete(6).num_edges == 15 and spectral_gap(Graph.complete(6)) == pytest.approx(1.0)
    np.testing.assert_allclose(np.linalg.eigvalsh(Graph.complete(6).laplacian()), [0] + [6] * 5, atol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(Graph.star(6).laplacian()), [0, 1, 1, 1, 1, 6], atol=1e-12)
    assert Graph.star(6).neighbours(0) == (1, 2, 3, 4, 5) and Graph.star(6, center=5).degree(5) == 5
    assert Graph.line(4).edges == ((0, 1), (1, 2), (2, 3))
    assert Graph.ring(2).edges == ((0, 1),) and Graph.ring(1).edges == ()
    assert Graph.grid(2, 3).edges == ((0, 1), (0, 3), (1, 2), (1, 4), (2, 5), (3, 4), (4, 5))
    assert set(Graph.torus(3, 4).degrees()) == {4} and Graph.torus(3, 4).num_edges == 24
    assert Graph.torus(2, 3).neighbours(0) == (1, 2, 3)  # the side of length 2 adds one edge, not two
    assert Graph.torus(1, 5) == Graph.ring(5) and Graph.grid(1, 5) == Graph.line(5)
    assert hash(Graph(3, [(1, 0)])) == hash(Graph(3, [(0, 1)], name="other"))
    g = Graph.ring(4)
    with pytest.raises(AttributeError):
        g.n = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"\{0, 2\} is not an edge"):
        g.edge_index(2, 0)
    with pytest.raises(ValueError, match="node 4 is out of range: nodes are 0..3"):
        g.neighbours(4)


@pytest.mark.parametrize(
    "n, edges, message",
    [
        (3, [(1, 1)], r"edge \(1, 1\) is a self-loop"),
        (3, [(0, 1), (1, 0)], r"edge \(1, 0\) is a duplicate of edge \(0, 1\)"),
        (3, [(0, 3)], r"node 3 is out of range: nodes are 0..2"),
        (3, [(-1, 2)], r"node -1 is out of range"),
        (3, [(0, 1, 2)], r"edge \(0, 1, 2\) is not a pair"),
        (3, [(0, 1.5)], r"edge \(0, 1.5\): nodes must be integers in 0..2"),
        (0, [], "n=0 is invalid: it must be an integer >= 1"),
    ],
)
def test_bad_edges_are_rejected(n, edges, message):
    with pytest.raises(ValueError, match=message):
        Graph(n, edges)


@pytest.mark.parametrize("n, d", [(1, 0), (2, 1), (5, 4), (6, 3), (9, 2), (10, 4), (30, 3)])
def test_random_regular_is_connected_regular_and_reproducible(n, d):
    g = Graph.random_regular(n, d, seed=7)
    assert set(g.degrees().tolist()) == {d} and g.is_connected()
    assert Graph.random_regular(n, d, seed=7) == g


def test_random_graphs_depend_on_the_seed_only():
    assert len({Graph.random_regular(20, 3, seed=s) for s in range(4)}) > 1
    assert len({Graph.erdos_renyi(20, 0.3, seed=s) for s in range(4)}) > 1
    for n, p in [(1, 0.5), (2, 1.0), (9, 0.4), (40, 0.15)]:
        g = Graph.erdos_renyi(n, p, seed=3)
        assert g.is_connected() and g == Graph.erdos_renyi(n, p, seed=3)
    assert Graph.erdos_renyi(6, 1.0) == Graph.complete(6)
    # pinned: the stream is raw PCG64 words (NumPy's NEP 19), so these hold on every machine
    assert Graph.random_regular(8, 3, seed=0).edges == PINNED_REGULAR
    assert Graph.erdos_renyi(7, 0.5, seed=0).edges == PINNED_ERDOS_RENYI


PINNED_REGULAR = ((0, 5), (0, 6), (0, 7), (1, 3), (1, 4), (1, 6), (2, 3), (2, 4), (2, 7), (3, 5), (4, 7), (5, 6))
PINNED_ERDOS_RENYI = ((0, 5), (0, 6), (1, 3), (1, 6), (2, 3), (2, 4), (3, 4), (3, 6), (4, 5), (4, 6), (5, 6))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Graph.random_regular(5, 5), "d=5 is invalid for n=5: a d-regular graph needs d < n and n \\* d even"),
        (lambda: Graph.random_regular(5, 3), "n \\* d even"),
        (lambda: Graph.random_regular(6, 1), "a connected regular graph needs d >= 2"),
        (lambda: Graph.random_regular(4, -1), "d=-1 is invalid"),
        (lambda: Graph.erdos_renyi(5, 0.0), "p=0.0 is invalid"),
        (lambda: Graph.erdos_renyi(5, 1.5), "p=1.5 is invalid"),
        (lambda: Graph.erdos_renyi(60, 0.02, seed=1, max_tries=3), "no connected G\\(n=60, p=0.02\\) graph in max_tries=3"),
        (lambda: Graph.random_regular(40, 2, seed=0, max_tries=1), "no connected 2-regular graph on 40 nodes"),
        (lambda: Graph.star(3, center=3), "center=3 is out of range"),
        (lambda: Graph.torus(0, 3), "rows=0 is invalid"),
    ],
)
def test_bad_constructor_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_edge_file_with_comments_blank_lines_and_isolated_nodes(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("# a square with a tail\n0 1\n1 2   # trailing comment\n\n  2 3\n3 0\n3\t4\n")
    g = Graph.from_edge_file(path)
    assert g.n == 5 and g.edges == ((0, 1), (0, 3), (1, 2), (2, 3), (3, 4))
    assert Graph.from_edge_file(path, n=7).degrees().tolist() == [2, 2, 2, 3, 1, 0, 0]
    schedule = make_schedule("graph", 5, edge_file=str(path))
    assert schedule == g and str(path) in schedule.describe()


@pytest.mark.parametrize(
    "line, reason",
    [
        ("1", "expected one edge 'i j' \\(two node numbers\\), found 1 fields"),
        ("1 2 3", "expected one edge 'i j' \\(two node numbers\\), found 3 fields: '1 2 3'"),
        ("a b", "node numbers must be integers >= 0"),
        ("-1 2", "node numbers must be integers >= 0"),
        ("1.0 2", "node numbers must be integers >= 0"),
        ("2 2", "self-loop 2 2"),
        ("1 0", "duplicate of the edge on line 2"),
        ("0 9", "node 9 is out of range: nodes are 0..5 \\(n=6\\)"),
    ],
)
def test_bad_edge_file_line_names_file_line_and_reason(tmp_path, line, reason):
    path = tmp_path / "bad.txt"
    path.write_text(f"# header\n0 1\n\n{line}\n2 3\n")
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}, line 4: {reason}"):
        Graph.from_edge_file(path, n=6)


def test_empty_edge_file_needs_n(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no edges: give n"):
        Graph.from_edge_file(path)
    assert Graph.from_edge_file(path, n=1) == Graph(1, [])


@pytest.mark.parametrize("n", [1, 2, 7, 12])
def test_make_graph_builds_every_kind(n):
    for kind in GRAPH_KINDS:
        k = {"regular": 2 if n > 2 else n - 1, "erdos-renyi": max(n - 1, 0)}.get(kind)
        g = make_graph(kind, n, k=k, seed=1)
        assert g.n == n and g.is_connected(), kind
        assert make_schedule("graph", n, graph=kind, k=k, seed=1) == g
    assert make_graph("torus", 12) == Graph.torus(3, 4) and make_graph("grid", 7) == Graph.line(7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="graph", n=4), "needs exactly one of graph \\(ring, complete"),
        (dict(name="graph", n=4, graph="ring", edge_file="x.txt"), "exactly one of graph"),
        (dict(name="graph", n=4, graph="mesh"), "unknown graph 'mesh'"),
        (dict(name="graph", n=4, graph="ring", k=2), "k=2 does not apply to graph ring"),
        (dict(name="graph", n=4, graph="regular"), "graph regular needs k"),
        (dict(name="graph", n=4, graph="erdos-renyi", k=4), "k=4 is invalid for erdos-renyi with n=4"),
        (dict(name="graph", n=4, graph="ring", segments=2), "segments=2 is invalid for graph"),
        (dict(name="graph", n=4, graph="ring", fair=False), "ablations only apply"),
        (dict(name="crossover", n=4, graph="ring"), "only apply to the graph schedule"),
    ],
)
def test_graph_schedule_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(kwargs.pop("name"), kwargs.pop("n"), **kwargs)


@pytest.mark.parametrize("n", [2, 3, 8, 13, 32])
def test_exponential_graph_joins_every_node_to_its_power_of_two_offsets(n):
    g = Graph.exponential(n)
    expected = {tuple(sorted((i, (i + 2 ** k) % n))) for i in range(n) for k in range(n.bit_length())
                if 2 ** k < n and (i + 2 ** k) % n != i}
    assert set(g.edges) == expected and g.is_connected()
    assert len(set(g.degrees())) == 1  # circulant: every node alike
