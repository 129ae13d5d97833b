"""Consensus simulator against dense matrix products, and the spectral gap."""

from __future__ import annotations

import numpy as np
import pytest

from topology import (
    BipartiteExponentialGraph,
    CrossoverSchedule,
    ExponentialGraph,
    HierarchicalSchedule,
    NPeerExponentialGraph,
    RingGraph,
    apply_dense,
    crossover_mean_square_rate,
    mean_square_rate,
    random_initial_values,
    segment_slices,
    simulate,
    spectral_gap,
)

SMALL_SCHEDULES = [
    CrossoverSchedule(7, 3, seed=1),
    CrossoverSchedule(7, 3, seed=1, fair=False),
    CrossoverSchedule(6, 2, seed=2, segmented=False),
    HierarchicalSchedule(8, 3, seed=3, local_size=2),
    HierarchicalSchedule(9, 2, seed=3, groupnum=3, fair=False),
    ExponentialGraph(9, 2),
    ExponentialGraph.all_peers(10),
    NPeerExponentialGraph(10, 2),
    BipartiteExponentialGraph(10, 1),
    RingGraph(5),
]


def test_segment_slices():
    assert segment_slices(7, 3) == [slice(0, 3), slice(3, 5), slice(5, 7)]
    assert segment_slices(2, 3) == [slice(0, 1), slice(1, 2), slice(2, 2)]


@pytest.mark.parametrize("schedule", SMALL_SCHEDULES, ids=repr)
def test_simulation_equals_product_of_mixing_matrices(schedule):
    x0 = random_initial_values(schedule.n, 7, seed=5)
    start, rounds = 2, 6
    result = simulate(schedule, x0, rounds, start_round=start)
    x = x0
    for t in range(start, start + rounds):
        x = apply_dense(schedule.mixing_matrices(t), x)
    np.testing.assert_allclose(result.final, x, atol=1e-12)
    assert result.errors[0] == 1.0 and result.errors.shape == (rounds + 1,)
    assert result.errors[-1] < result.errors[0]
    if schedule.n > 2 and not isinstance(schedule, RingGraph):
        assert result.errors[-1] < 0.2


def test_push_sum_with_uneven_weights_reaches_the_weighted_target():
    graph = ExponentialGraph(12, 1)
    x0 = random_initial_values(12, 3, seed=1)
    w0 = np.linspace(0.5, 2.0, 12)
    result = simulate(graph, x0, 40, w0=w0)
    x, w = x0.copy(), w0.copy()
    for t in range(40):  # dense reference: the same column-stochastic matrix for x and w
        mat = graph.mixing_matrix(t)
        x, w = mat @ x, mat @ w
    np.testing.assert_allclose(result.weights, w, atol=1e-12)
    np.testing.assert_allclose(result.final, x / w[:, None], atol=1e-12)
    np.testing.assert_allclose(result.weights.sum(), w0.sum())  # sum of weights conserved
    target = x0.sum(axis=0) / w0.sum()
    np.testing.assert_allclose(result.final, np.broadcast_to(target, x0.shape), atol=1e-6)
    # z starts far from consensus: errors + drift measure the distance to the target
    assert result.errors[-1] + result.drift[-1] < 1e-10 < result.drift[0]


def test_error_decreases_and_mean_is_conserved_for_doubly_stochastic_schedules():
    for schedule in (CrossoverSchedule(32, 4, seed=0), HierarchicalSchedule(32, 2, seed=0, local_size=4),
                     ExponentialGraph(32, 2)):
        result = simulate(schedule, random_initial_values(32, 8, 3), 12)
        assert np.all(np.diff(result.errors) <= 1e-15)
        assert np.max(result.drift) < 1e-25


def test_no_fairness_moves_the_mean_and_fairness_does_not():
    x0 = random_initial_values(16, 4, seed=0)
    unfair = simulate(CrossoverSchedule(16, 2, seed=0, fair=False), x0, 10)
    fair = simulate(CrossoverSchedule(16, 2, seed=0), x0, 10)
    assert unfair.drift[-1] > 1e-4
    assert fair.drift[-1] < 1e-25


def test_large_crossover_simulation_follows_the_closed_form_rate():
    n = 4096
    sched = CrossoverSchedule(n, 4, seed=11)
    result = simulate(sched, random_initial_values(n, 16, 0), 30)
    rate = crossover_mean_square_rate(n)
    assert result.empirical_rate() == pytest.approx(rate, abs=0.01)
    assert result.errors[-1] < 1e-8
    assert np.max(result.drift) < 1e-20


def test_spectral_gap_closed_forms():
    assert mean_square_rate(CrossoverSchedule(10, 2, 0)).rate == pytest.approx(8 / 18)
    assert mean_square_rate(CrossoverSchedule(10, 2, 0)).method == "closed-form"
    assert spectral_gap(CrossoverSchedule(2, 1, 0)) == 1.0  # two replicas average exactly
    hier = HierarchicalSchedule(24, 2, seed=0, local_size=4)  # crossover over 6 nodes
    assert mean_square_rate(hier).rate == pytest.approx(crossover_mean_square_rate(6))


def _fourier_rate(graph) -> float:
    """Oracle for circulant rounds: eigenvalue of round t on mode f is (1 + sum_o e^{2 pi i f o / n}) / (k+1)."""
    n, f = graph.n, np.arange(1, graph.n)
    prod = np.ones(n - 1, dtype=complex)
    for t in range(graph.period):
        offs = np.array(graph.offsets_at(t))
        lam = (1 + np.exp(2j * np.pi * np.outer(f, offs) / n).sum(axis=1)) / (graph.peers_per_round + 1)
        prod *= lam
    return float(np.max(np.abs(prod)) ** (2.0 / graph.period))


@pytest.mark.parametrize(
    "graph",
    [ExponentialGraph(12, 1), ExponentialGraph(37, 2), ExponentialGraph.all_peers(20),
     BipartiteExponentialGraph(50, 2), NPeerExponentialGraph(30, 2), RingGraph(9)],
    ids=repr,
)
def test_periodic_gap_methods_agree_with_fourier_oracle(graph):
    oracle = _fourier_rate(graph)
    estimates = {m: mean_square_rate(graph, method=m) for m in ("fourier", "dense", "lanczos")}
    assert mean_square_rate(graph).method == "fourier"  # exact method chosen automatically
    for method, estimate in estimates.items():
        assert estimate.method == method
        assert estimate.rate == pytest.approx(oracle, abs=1e-9), method


def test_known_gaps():
    assert spectral_gap(RingGraph(16)) == pytest.approx(np.sin(np.pi / 16) ** 2)
    assert spectral_gap(RingGraph(4096)) == pytest.approx(np.sin(np.pi / 4096) ** 2, rel=1e-6)
    assert spectral_gap(ExponentialGraph(64, 1)) == pytest.approx(1.0)  # Pi = J exactly
    for method in ("fourier", "lanczos"):  # no dense 4096 x 4096 matrix
        assert mean_square_rate(ExponentialGraph(4096, 1), method=method).rate < 1e-12
    # Lanczos on the operator of a larger non-power-of-two graph
    g = ExponentialGraph(1000, 2)
    assert mean_square_rate(g, method="lanczos").rate == pytest.approx(_fourier_rate(g), abs=1e-7)


def test_gap_method_validation():
    with pytest.raises(ValueError, match="does not apply"):
        mean_square_rate(CrossoverSchedule(8, 1, 0), method="dense")
    with pytest.raises(ValueError, match="does not apply"):
        mean_square_rate(RingGraph(8), method="closed-form")
    with pytest.raises(ValueError, match="too large"):
        mean_square_rate(RingGraph(4096), method="dense")
    with pytest.raises(ValueError, match="unknown gap method"):
        mean_square_rate(RingGraph(8), method="power")
