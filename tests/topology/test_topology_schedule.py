"""The PeerSchedule protocol on every schedule of the registry: consistent transfers that
reproduce the mixing matrices, agreement with the older per-family views, and the checker."""

from __future__ import annotations

import numpy as np
import pytest

from topology import (
    SCHEDULES,
    BipartiteExponentialGraph,
    CrossoverSchedule,
    ExponentialGraph,
    Graph,
    HierarchicalSchedule,
    NPeerExponentialGraph,
    PeerSchedule,
    RingGraph,
    Schedule,
    Transfer,
    check_transfers,
    intra_node_matrix,
    make_schedule,
    num_powers_of_two_below,
    round_plan,
)

NS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16)
ROUNDS = range(4)


def _variants(name: str, n: int) -> list[dict]:
    """make_schedule arguments of ``name`` that are valid on ``n`` ranks (none: not applicable)."""
    if name == "crossover":
        return [dict(segments=1), dict(segments=3), dict(segments=3, fair=False), dict(segments=3, segmented=False)]
    if name == "hierarchical":
        divisors = [g for g in range(1, n + 1) if n % g == 0]
        return [dict(segments=3, local_size=g, segment_bytes=[3, 1, 2]) for g in divisors] + [
            dict(segments=4, groupnum=1 if n == 1 else 2 if n % 2 == 0 else n, fair=False)
        ]
    if name == "ring":
        return [{}]
    if name == "graph":
        kinds = [dict(graph=kind) for kind in ("ring", "complete", "star", "line", "grid", "torus")]
        if n >= 3:
            kinds.append(dict(graph="regular", k=2 if n % 2 else 3))
        return kinds + [dict(graph="erdos-renyi", k=min(max(n - 1, 0), 3), seed=n)]
    if n < 2:
        return []
    if name == "exponential":
        return [dict(k=k) for k in range(1, min(2, num_powers_of_two_below(n)) + 1)] + [
            dict(k=min(3, len(ExponentialGraph(n, bidirectional=True).offsets)), bidirectional=True)
        ]
    if name == "exponential-all":
        return [{}]
    if name == "sgp-npeer":
        return [dict(k=k) for k in range(1, min(2, n - 1) + 1)]
    if name == "bipartite-exponential":
        return [] if n % 2 else [dict(k=k) for k in range(1, min(2, len(BipartiteExponentialGraph(n).offsets)) + 1)]
    raise AssertionError(f"schedule {name!r} has no test variants: add them here")


CASES = [(name, n, kw) for name in SCHEDULES for n in NS for kw in _variants(name, n)]


def _id(case) -> str:
    name, n, kw = case
    return f"{name}-n{n}-" + ",".join(f"{k}={v}" for k, v in kw.items())


def test_every_registered_schedule_is_covered_for_small_and_odd_n():
    for name in SCHEDULES:
        covered = {n for case_name, n, _ in CASES if case_name == name}
        assert {2, 6, 12} <= covered, name
        if name != "bipartite-exponential":  # needs an even n
            assert {3, 5, 7, 9} <= covered, name
    assert {name for name, n, _ in CASES if n == 1} == {"crossover", "hierarchical", "ring", "graph"}
    assert Schedule is PeerSchedule
    assert not isinstance(object(), PeerSchedule)


def _implied_matrices(schedule: PeerSchedule, round: int) -> np.ndarray:
    """``W_s`` as the transfers imply it: a node-averaged own value and received values, averaged uniformly."""
    n, g = schedule.n, schedule.local_size
    intra = intra_node_matrix(n // g, g)
    plan = round_plan(schedule, round)
    w = np.zeros((schedule.num_segments, n, n))
    for first in range(0, n, g):
        node = range(first, first + g)
        for s in range(schedule.num_segments):
            sources = [src for r in node for tr in plan[r] if tr.segment == s for src in tr.recv_from]
            w[s, first : first + g] = (intra[first] + intra[sources].sum(axis=0)) / (1 + len(sources))
    return w


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_transfers_are_consistent_and_reproduce_the_mixing_matrices(case):
    name, n, kw = case
    schedule = make_schedule(name, n, **kw)
    assert isinstance(schedule, PeerSchedule)
    assert schedule.n == n and n % schedule.local_size == 0
    for t in ROUNDS:
        check_transfers(schedule, t)  # i sends s to j  <=>  j receives s from i
        plan = round_plan(schedule, t)
        assert all(isinstance(tr, Transfer) for transfers in plan for tr in transfers)
        for first in range(0, n, schedule.local_size):  # every node carries every segment once
            carried = sorted(tr.segment for r in range(first, first + schedule.local_size) for tr in plan[r])
            assert carried == list(range(schedule.num_segments))
        mixing = schedule.mixing_matrices(t)
        implied = _implied_matrices(schedule, t)
        assert mixing.shape == implied.shape == (schedule.num_segments, n, n)
        np.testing.assert_array_equal(mixing != 0, implied != 0)
        if not isinstance(schedule, Graph):  # graphs use Metropolis weights (test_topology_graph)
            np.testing.assert_allclose(mixing, implied, rtol=0, atol=1e-15)


def test_transfers_agree_with_each_familys_own_view():
    cross = CrossoverSchedule(7, 3, seed=2, fair=False)
    hier = HierarchicalSchedule(12, 5, seed=1, local_size=3, segment_bytes=[4, 1, 3, 2, 2])
    graphs = [ExponentialGraph(9, 2), NPeerExponentialGraph(10, 2), RingGraph(5)]
    for t in range(3):
        peers = cross.peers(t)
        for rank in range(cross.n):
            assert cross.transfers(rank, t) == [
                Transfer(s, tuple(peers.receivers(s, rank)), (int(peers.recv_from[s, rank]),)) for s in range(3)
            ]
        for rank, old in enumerate(hier.inter_node_plan(t)):
            assert hier.transfers(rank, t) == [Transfer(tr.segment, tr.send_to, (tr.recv_from,)) for tr in old]
        for g in graphs:
            for rank in range(g.n):
                assert g.transfers(rank, t) == [Transfer(0, tuple(g.out_peers(rank, t)), tuple(g.in_peers(rank, t)))]
    # no peer: nothing sent or received, the legacy view says "itself"
    assert CrossoverSchedule(1, 2, seed=0).transfers(0, 0) == [Transfer(0, (), ()), Transfer(1, (), ())]
    assert HierarchicalSchedule(4, 2, seed=0, groupnum=1).inter_node_plan(0)[1][0].recv_from == 1
    assert HierarchicalSchedule(4, 2, seed=0, groupnum=1).transfers(1, 0) == [Transfer(1, (), ())]


def test_fair_crossover_sends_one_copy_and_no_fairness_may_send_several_or_none():
    fair, unfair = CrossoverSchedule(9, 4, seed=3), CrossoverSchedule(9, 4, seed=3, fair=False)
    sent = [len(tr.send_to) for t in range(5) for r in range(9) for tr in unfair.transfers(r, t)]
    assert {len(tr.send_to) for t in range(5) for r in range(9) for tr in fair.transfers(r, t)} == {1}
    assert 0 in sent and max(sent) >= 2 and sum(sent) == 5 * 9 * 4  # every rank receives exactly one


@pytest.mark.parametrize(
    "schedule",
    [CrossoverSchedule(5, 2, 0), HierarchicalSchedule(4, 2, 0, local_size=2), RingGraph(5), Graph.ring(5)],
    ids=repr,
)
def test_transfers_reject_bad_rank_or_round(schedule):
    for rank, round, what in ((schedule.n, 0, "rank"), (-1, 0, "rank"), (0, -1, "round")):
        with pytest.raises(ValueError, match=f"{what} must be"):
            schedule.transfers(rank, round)


class _Plan:
    """A hand-written schedule for the checker."""

    local_size = 1

    def __init__(self, n: int, num_segments: int, plan: dict[int, list[Transfer]]) -> None:
        self.n, self.num_segments, self._plan = n, num_segments, plan

    def transfers(self, rank: int, round: int) -> list[Transfer]:
        return self._plan.get(rank, [])


@pytest.mark.parametrize(
    "plan, message",
    [
        ({0: [Transfer(0, (1,), ())]}, "rank 0 sends to rank 1, which does not list 0 in recv_from"),
        ({1: [Transfer(0, (), (0,))]}, "rank 1 receives from rank 0, which does not list 1 in send_to"),
        ({0: [Transfer(0, (1,), ())], 1: [Transfer(1, (), (0,))]}, "segment 0: rank 0 sends to rank 1"),
        ({0: [Transfer(0, (0,), (0,))]}, r"send_to=\[0\] must hold distinct ranks in 0..2 other than 0"),
        ({2: [Transfer(0, (), (1, 1))]}, r"recv_from=\[1, 1\] must hold distinct"),
        ({2: [Transfer(0, (3,), ())]}, r"send_to=\[3\]"),
        ({1: [Transfer(1, (), ()), Transfer(0, (), ())]}, r"segments \[1, 0\] must be ascending"),
        ({1: [Transfer(2, (), ())]}, r"in 0..1"),
    ],
)
def test_check_transfers_names_the_inconsistency(plan, message):
    with pytest.raises(ValueError, match=message):
        check_transfers(_Plan(3, 2, plan), 4)
    check_transfers(_Plan(3, 2, {0: [Transfer(1, (1, 2), ())], 1: [Transfer(1, (), (0,))], 2: [Transfer(1, (), (0,))]}), 0)
