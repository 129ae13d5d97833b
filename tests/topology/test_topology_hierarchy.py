"""Hierarchical schedule: node layout, segment split over local ranks, inter-node plan, matrices."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from topology import (
    CrossoverSchedule,
    HierarchicalSchedule,
    NodeLayout,
    assign_segments_to_local_ranks,
    crossover_matrix,
    is_doubly_stochastic,
    is_row_stochastic,
)


def test_layout_from_local_size_and_groupnum():
    a, b = NodeLayout(12, local_size=4), NodeLayout(12, groupnum=3)
    for layout in (a, b):
        assert (layout.local_size, layout.num_nodes) == (4, 3)
        assert [layout.node_of(r) for r in range(12)] == [r // 4 for r in range(12)]
        assert [layout.local_rank(r) for r in range(12)] == [r % 4 for r in range(12)]
        assert layout.ranks_of(2) == [8, 9, 10, 11]
        assert all(layout.rank_of(layout.node_of(r), layout.local_rank(r)) == r for r in range(12))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=8, groupnum=3), "groupnum=3 does not divide n=8"),
        (dict(n=8, local_size=3), "local_size=3 does not divide n=8"),
        (dict(n=8, groupnum=0), "groupnum=0"),
        (dict(n=8), "exactly one"),
        (dict(n=8, local_size=2, groupnum=4), "exactly one"),
    ],
)
def test_layout_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NodeLayout(**kwargs)


def _best_max_load(sizes, g):
    return min(
        max(sum(s for s, o in zip(sizes, owners) if o == l) for l in range(g))
        for owners in itertools.product(range(g), repeat=len(sizes))
    )


@pytest.mark.parametrize(
    "sizes, g",
    [([5, 3, 3, 2, 2, 1], 2), ([7, 7, 6, 5, 4, 4, 3], 3), ([1] * 7, 3), ([10, 1, 1], 4), ([0, 0, 4], 2), ([], 2)],
)
def test_assign_segments_balances_bytes(sizes, g):
    owners = assign_segments_to_local_ranks(sizes, g)
    assert len(owners) == g
    assert sorted(itertools.chain(*owners)) == list(range(len(sizes)))  # each segment once
    assert all(segs == sorted(segs) for segs in owners)
    loads = [sum(sizes[s] for s in segs) for segs in owners]
    if sizes:
        assert max(loads) <= 4 / 3 * _best_max_load(sizes, g)  # LPT guarantee
    if len(set(sizes)) == 1:
        assert max(map(len, owners)) - min(map(len, owners)) <= 1


def test_assign_segments_known_split():
    # ResNet-50 "coarse" segments (MB, rounded): stem, layer1..4, fc over 4 GPUs
    assert assign_segments_to_local_ranks([1, 9, 48, 284, 599, 8], 4) == [[4], [3], [2], [0, 1, 5]]
    with pytest.raises(ValueError):
        assign_segments_to_local_ranks([1, -1], 2)
    with pytest.raises(ValueError):
        assign_segments_to_local_ranks([1], 0)


@pytest.mark.parametrize("fair", [True, False])
def test_inter_node_plan_matches_the_node_schedule(fair):
    n, g, segs = 12, 3, 5
    sched = HierarchicalSchedule(n, segs, seed=8, local_size=g, fair=fair, segment_bytes=[4, 1, 3, 2, 2])
    node_sched = CrossoverSchedule(n // g, segs, seed=8, fair=fair)
    for t in range(3):
        node_recv = node_sched.recv_from(t)
        np.testing.assert_array_equal(sched.node_peers(t).recv_from, node_recv)
        plan = sched.inter_node_plan(t)
        assert len(plan) == n
        received = {}
        sent = set()
        for rank, transfers in enumerate(plan):
            node, local = divmod(rank, g)
            assert [tr.segment for tr in transfers] == sched.owners[local]
            for seg, send_to, recv_from in transfers:
                assert sched.owner_of_segment[seg] == local
                assert divmod(recv_from, g) == (node_recv[seg, node], local)  # same local rank
                received[(seg, node)] = recv_from
                for dst in send_to:
                    assert dst % g == local and node_recv[seg, dst // g] == node
                    sent.add((seg, rank, dst))
                if fair:
                    assert len(send_to) == 1
        # every node receives every segment once, from the rank that lists it as a destination
        assert sorted(received) == [(s, a) for s in range(segs) for a in range(n // g)]
        assert sent == {(s, src, sched.layout.rank_of(a, src % g)) for (s, a), src in received.items()}


def test_single_node_has_no_inter_node_traffic():
    sched = HierarchicalSchedule(4, 2, seed=0, groupnum=1)
    plan = sched.inter_node_plan(0)
    assert [[(tr.segment, tr.send_to, tr.recv_from) for tr in p] for p in plan] == [
        [(0, (), 0)], [(1, (), 1)], [], []
    ]
    np.testing.assert_allclose(sched.mixing_matrices(0)[0], np.full((4, 4), 0.25))


@pytest.mark.parametrize("fair", [True, False])
def test_hierarchical_matrix_is_intra_then_inter(fair):
    n, g = 12, 3
    sched = HierarchicalSchedule(n, 2, seed=4, local_size=g, fair=fair)
    intra = sched.intra_node_matrix()
    inter = sched.inter_node_matrices(1)
    node_recv = sched.node_schedule.recv_from(1)
    for s, w in enumerate(sched.mixing_matrices(1)):
        np.testing.assert_allclose(w, inter[s] @ intra, atol=1e-15)
        np.testing.assert_allclose(w, np.kron(crossover_matrix(node_recv[s]), np.full((g, g), 1 / g)))
        assert is_row_stochastic(w)
        if fair:
            assert is_doubly_stochastic(w)


def test_hierarchical_round_conserves_the_mean():
    sched = HierarchicalSchedule(16, 3, seed=5, groupnum=4)
    x = np.random.default_rng(0).standard_normal((16, 7))
    for t in range(4):
        y = sched.apply(x, t)
        np.testing.assert_allclose(y.mean(axis=0), x.mean(axis=0), atol=1e-12)
        # all ranks of a node hold the same values after the round
        assert np.allclose(y.reshape(4, 4, 7), y.reshape(4, 4, 7)[:, :1])
        x = y
