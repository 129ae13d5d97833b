"""SGP graphs: documented rotation, in/out consistency, push-sum matrices (the multi-peer graph
that ``--sgp-peers k`` builds in detail: test_topology_sgp_npeer.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from topology import (
    BipartiteExponentialGraph,
    ExponentialGraph,
    NPeerExponentialGraph,
    RingGraph,
    is_column_stochastic,
    is_doubly_stochastic,
    is_row_stochastic,
    num_powers_of_two_below,
    push_sum_matrix,
)


def _powers_below(n: int) -> list[int]:
    out, p = [], 1
    while p < n:
        out.append(p)
        p *= 2
    return out


def test_number_of_powers_of_two():
    for n in range(1, 300):
        assert num_powers_of_two_below(n) == len(_powers_below(n))
    assert [num_powers_of_two_below(n) for n in (2, 3, 4, 5, 8, 9, 4096, 4097)] == [1, 2, 2, 3, 3, 4, 12, 13]


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("n", [3, 4, 5, 8, 13, 16, 33, 100])
def test_exponential_distances_rotate_as_documented(n, k):
    g = ExponentialGraph(n, k)
    powers = _powers_below(n)
    L = len(powers)
    assert g.period == L // np.gcd(k, L)
    for t in range(2 * L + 1):
        distances = [2 ** ((t * k + j) % L) for j in range(k)]
        assert list(g.offsets_at(t)) == distances
        for i in range(n):
            assert g.out_peers(i, t) == [(i + d) % n for d in distances]
            assert g.in_peers(i, t) == [(i - d) % n for d in distances]


def _assert_in_out_consistent(g, rounds):
    for t in rounds:
        out_sets = [set(g.out_peers(i, t)) for i in range(g.n)]
        in_sets = [set(g.in_peers(i, t)) for i in range(g.n)]
        for i in range(g.n):
            assert i not in out_sets[i]
            assert len(out_sets[i]) == len(g.out_peers(i, t)) == g.peers_per_round  # no duplicates
            for j in range(g.n):
                assert (j in out_sets[i]) == (i in in_sets[j])
        np.testing.assert_array_equal(g.out_peer_array(t), [g.out_peers(i, t) for i in range(g.n)])
        np.testing.assert_array_equal(g.in_peer_array(t), [g.in_peers(i, t) for i in range(g.n)])


@pytest.mark.parametrize(
    "graph",
    [
        ExponentialGraph(2, 1),
        ExponentialGraph(11, 1),
        ExponentialGraph(16, 2),
        ExponentialGraph(12, 3),
        ExponentialGraph(12, 2, bidirectional=True),
        ExponentialGraph.all_peers(20),
        NPeerExponentialGraph(10, 2),
        NPeerExponentialGraph(27, 1),
        BipartiteExponentialGraph(16, 1),
        BipartiteExponentialGraph(10, 2),
        RingGraph(7),
    ],
    ids=repr,
)
def test_in_and_out_peers_are_consistent(graph):
    _assert_in_out_consistent(graph, range(2 * graph.period + 1))


def test_all_peers_variant_uses_every_power_every_round():
    for n in (2, 5, 9, 64):
        g = ExponentialGraph.all_peers(n)
        assert g.period == 1
        for t in range(3):
            assert list(g.offsets_at(t)) == _powers_below(n)


def test_ring():
    g = RingGraph(6)
    for t in range(3):
        assert [g.out_peers(i, t) for i in range(6)] == [[1], [2], [3], [4], [5], [0]]
        assert [g.in_peers(i, t) for i in range(6)] == [[5], [0], [1], [2], [3], [4]]
    single = RingGraph(1)
    assert single.out_peers(0, 0) == [] and single.in_peers(0, 0) == []
    np.testing.assert_array_equal(single.mixing_matrix(0), [[1.0]])


def _sgp_code_bidirectional_book(n: int) -> list[int]:
    """The SGP code's DynamicDirectedExponentialGraph phone book as offsets: +2^i, -2^i for
    i = 0..int(log2(n - 1)), every entry kept (its membership test compares an int with Edge objects)."""
    return [s * (1 << i) % n for i in range(int(math.log(n - 1, 2)) + 1) for s in (1, -1)]


def test_bidirectional_is_the_sgp_codes_phone_book_where_it_has_no_duplicates():
    differ = []
    for n in range(2, 200):
        book = _sgp_code_bidirectional_book(n)
        ours = ExponentialGraph(n, 1, bidirectional=True).offsets
        assert list(ours) == [o for i, o in enumerate(book) if o not in book[:i]]  # duplicates dropped
        assert 0 not in book
        if len(set(book)) == len(book):
            assert list(ours) == book
        else:
            differ.append(n)
    # the n listed in topology/exponential.py's module doc
    assert differ[:15] == [2, 3, 4, 5, 6, 8, 9, 10, 12, 16, 17, 18, 20, 24, 32]
    assert {7, 11, 13, 14, 15, 19}.isdisjoint(differ)


def test_two_peers_of_todays_exponential_graph_are_not_sgps_multi_peer_graph():
    """``exponential`` with k = 2 (two consecutive powers of two per round) is kept as a named
    alternative; SGP's 2-peer graph (--sgp-peers 2) is sgp-npeer, offsets j * 3^i."""
    assert [ExponentialGraph(8, 2).offsets_at(t) for t in range(3)] == [(1, 2), (4, 1), (2, 4)]
    assert [NPeerExponentialGraph(8, 2).offsets_at(t) for t in range(3)] == [(1, 2), (3, 6), (1, 2)]


def test_sgp_code_phone_books():
    # DynamicDirectedExponentialGraph's +/- phone book, duplicates modulo n dropped (the SGP code keeps
    # them: +4 and -4 are both listed for n = 8)
    assert ExponentialGraph(8, 1, bidirectional=True).offsets == (1, 7, 2, 6, 4)
    assert _sgp_code_bidirectional_book(8) == [1, 7, 2, 6, 4, 4]
    assert ExponentialGraph(2, 1, bidirectional=True).offsets == (1,)
    # bipartite: distances 1, 1 + 2^i, both directions
    assert BipartiteExponentialGraph(16).offsets == (1, 15, 3, 13, 5, 11, 9, 7)
    assert BipartiteExponentialGraph(4).offsets == (1, 3)
    # N-peer (what --sgp-peers k builds): j * (k+1)^i, with an exact integer log (float log(243, 3) < 5)
    assert NPeerExponentialGraph(27, 2).offsets == (1, 2, 3, 6, 9, 18)
    assert NPeerExponentialGraph(10, 2).offsets == (1, 2, 3, 6, 9, 8)
    assert 243 in NPeerExponentialGraph(244, 2).offsets
    assert 0 not in NPeerExponentialGraph(6, 2).offsets  # 2 * 3 = 6 would be the rank itself


def test_bipartite_edges_join_even_and_odd_ranks():
    g = BipartiteExponentialGraph(32, 2)
    for t in range(g.period):
        for i in range(32):
            assert g.is_passive(i) == (i % 2 == 0)
            assert all((i - j) % 2 == 1 for j in g.out_peers(i, t) + g.in_peers(i, t))


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: ExponentialGraph(8, 4), "1 <= k <= 3"),
        (lambda: ExponentialGraph(8, 0), "k=0"),
        (lambda: ExponentialGraph(2, 2), "k=2"),
        (lambda: ExponentialGraph(1, 1), "n must be >= 2"),
        (lambda: NPeerExponentialGraph(5, 5), "k=5"),
        (lambda: BipartiteExponentialGraph(9), "n=9 is odd"),
        (lambda: BipartiteExponentialGraph(8, 7), "k=7"),
        (lambda: RingGraph(0), "n must be >= 1"),
    ],
)
def test_validation(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize(
    "graph",
    [ExponentialGraph(9, 2), ExponentialGraph.all_peers(6), BipartiteExponentialGraph(12, 3),
     NPeerExponentialGraph(14, 2), RingGraph(5)],
    ids=repr,
)
def test_push_sum_matrices(graph):
    k = graph.peers_per_round
    x = np.random.default_rng(1).standard_normal((graph.n, 3))
    for t in range(graph.period + 1):
        w = graph.mixing_matrix(t)
        assert is_column_stochastic(w)
        assert is_doubly_stochastic(w)  # regular graphs: w stays 1
        np.testing.assert_allclose(np.diag(w), 1.0 / (k + 1))
        for i in range(graph.n):
            for j in graph.out_peers(i, t):
                assert w[j, i] == pytest.approx(1.0 / (k + 1))
        np.testing.assert_allclose(graph.apply(x, t), w @ x, atol=1e-14)
        np.testing.assert_allclose(graph.apply_transpose(x, t), w.T @ x, atol=1e-14)


def test_push_sum_matrix_of_an_irregular_graph_is_only_column_stochastic():
    w = push_sum_matrix(3, np.array([0, 0, 1]), np.array([1, 2, 2]))
    np.testing.assert_allclose(w, [[1 / 3, 0, 0], [1 / 3, 1 / 2, 0], [1 / 3, 1 / 2, 1]])
    assert is_column_stochastic(w) and not is_row_stochastic(w)
