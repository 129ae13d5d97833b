"""Crossover schedule: peer-map API, ablations, mixing matrices and the closed-form rate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from topology import (
    CrossoverSchedule,
    PeerMap,
    crossover_matrix,
    crossover_mean_square_rate,
    derangement,
    gather_matrix,
    is_column_stochastic,
    is_doubly_stochastic,
    is_row_stochastic,
    other_ranks_map,
)


def test_peers_are_keyed_by_seed_round_and_segment():
    sched = CrossoverSchedule(10, 3, seed=42)
    r = sched.recv_from(7)
    assert r.shape == (3, 10) and r.dtype == np.int64
    for s in range(3):
        np.testing.assert_array_equal(r[s], derangement(10, 42, 7, s))
    assert len({tuple(row) for row in r}) == 3  # one map per segment
    assert not np.array_equal(sched.recv_from(8), r)  # and per round


def test_peer_map_orientation_and_inverse():
    pm = CrossoverSchedule(9, 2, seed=3).peers(5)
    send_to, recv_from = pm  # unpacks a load-balanced map
    assert pm.is_load_balanced
    for s in range(2):
        for i in range(9):
            j = recv_from[s, i]  # i receives segment s from j ...
            assert send_to[s, j] == i  # ... so j sends segment s to i
            assert pm.receivers(s, j) == [i]
        assert pm.send_lists(s) == [[int(send_to[s, j])] for j in range(9)]
    np.testing.assert_array_equal(pm.send_counts, np.ones((2, 9), dtype=int))
    with pytest.raises(ValueError):
        pm.recv_from[0, 0] = 1  # read-only view of the schedule


def test_no_fairness_map_and_its_send_lists():
    sched = CrossoverSchedule(6, 4, seed=1, fair=False)
    pm = sched.peers(0)
    for s in range(4):
        np.testing.assert_array_equal(pm.recv_from[s], other_ranks_map(6, 1, 0, s))
    assert not np.any(pm.recv_from == np.arange(6))
    assert not pm.is_load_balanced  # for this seed some rank is picked twice
    with pytest.raises(ValueError, match="send_lists"):
        pm.send_to
    with pytest.raises(ValueError):
        send_to, recv_from = pm
    for s in range(4):
        lists = pm.send_lists(s)
        # every receiver appears in exactly one sender's list, the one it receives from
        pairs = sorted((recv, sender) for sender, recvs in enumerate(lists) for recv in recvs)
        assert pairs == [(i, int(pm.recv_from[s, i])) for i in range(6)]
        np.testing.assert_array_equal(pm.send_counts[s], [len(x) for x in lists])
    assert pm.send_counts.max() >= 2


@pytest.mark.parametrize("fair", [True, False])
def test_no_segmentation_reuses_one_map_per_round(fair):
    sched = CrossoverSchedule(12, 5, seed=9, fair=fair, segmented=False)
    for t in range(4):
        r = sched.recv_from(t)
        assert np.all(r == r[0])
        segmented = CrossoverSchedule(12, 5, seed=9, fair=fair).recv_from(t)
        np.testing.assert_array_equal(r[0], segmented[0])  # it is segment 0's map


def test_single_rank_has_no_peer():
    sched = CrossoverSchedule(1, 3, seed=0)
    pm = sched.peers(4)
    np.testing.assert_array_equal(pm.recv_from, np.zeros((3, 1)))
    assert pm.send_lists(0) == [[]] and pm.receivers(2, 0) == []
    np.testing.assert_array_equal(sched.mixing_matrices(4), np.ones((3, 1, 1)))
    assert sched.mean_square_rate() == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=0, num_segments=1, seed=0), dict(n=4, num_segments=0, seed=0), dict(n=4, num_segments=1, seed=-1)],
)
def test_invalid_construction(kwargs):
    with pytest.raises(ValueError):
        CrossoverSchedule(**kwargs)


def test_gather_matrix_orientation():
    recv_from = [2, 0, 1]
    x = np.array([[10.0], [20.0], [30.0]])
    np.testing.assert_array_equal(gather_matrix(recv_from) @ x, [[30.0], [10.0], [20.0]])
    np.testing.assert_array_equal(crossover_matrix(recv_from) @ x, [[20.0], [15.0], [25.0]])


@pytest.mark.parametrize("n", [2, 3, 5, 8, 17, 64])
def test_fair_mixing_is_doubly_stochastic_and_conserves_the_mean(n):
    sched = CrossoverSchedule(n, 3, seed=n)
    x = np.random.default_rng(n).standard_normal((n, 4))
    for t in range(3):
        for w in sched.mixing_matrices(t):
            assert is_doubly_stochastic(w)
            assert np.all(np.diag(w) == 0.5)
            np.testing.assert_allclose((w @ x).mean(axis=0), x.mean(axis=0), atol=1e-12)


def test_no_fairness_is_row_but_not_column_stochastic():
    n = 8
    x = np.arange(n, dtype=float)[:, None] ** 2
    drifted = 0
    for seed in range(5):
        for w in CrossoverSchedule(n, 2, seed=seed, fair=False).mixing_matrices(0):
            assert is_row_stochastic(w)
            if not is_column_stochastic(w):
                drifted += 1
                assert abs((w @ x).mean() - x.mean()) > 1e-6  # the mean moves
    assert drifted >= 8  # almost every draw is unbalanced for n = 8


@pytest.mark.parametrize("fair", [True, False])
@pytest.mark.parametrize("segmented", [True, False])
def test_ablation_matrices_are_row_stochastic(fair, segmented):
    sched = CrossoverSchedule(7, 4, seed=2, fair=fair, segmented=segmented)
    mats = sched.mixing_matrices(3)
    assert mats.shape == (4, 7, 7)
    assert all(is_row_stochastic(w) for w in mats)
    if not segmented:
        assert all(np.array_equal(w, mats[0]) for w in mats)


def _expected_disagreement_operator(maps: list[np.ndarray], n: int) -> np.ndarray:
    centre = np.eye(n) - np.full((n, n), 1.0 / n)
    return np.mean([crossover_matrix(m).T @ centre @ crossover_matrix(m) for m in maps], axis=0)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_closed_form_rates_match_exact_enumeration(n):
    ranks = range(n)
    fair_maps = [np.array(p) for p in itertools.permutations(ranks) if all(p[i] != i for i in ranks)]
    unfair_maps = [np.array(m) for m in itertools.product(*[[j for j in ranks if j != i] for i in ranks])]
    for maps, fair in [(fair_maps, True), (unfair_maps, False)]:
        m = _expected_disagreement_operator(maps, n)
        eig = np.linalg.eigvalsh(m)
        # zero on the consensus direction, the closed-form rate (n-1 times) elsewhere
        np.testing.assert_allclose(m @ np.ones(n), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.sort(eig)[1:], crossover_mean_square_rate(n, fair), atol=1e-12)
    if n > 2:
        assert crossover_mean_square_rate(n, False) < crossover_mean_square_rate(n, True)


def test_peer_map_validates_its_input():
    with pytest.raises(ValueError, match="shape"):
        PeerMap(np.array([1, 0]))
    with pytest.raises(ValueError, match="0..1"):
        PeerMap(np.array([[1, 2]]))
    assert PeerMap(np.array([[1, 0]])).send_to.tolist() == [[1, 0]]
