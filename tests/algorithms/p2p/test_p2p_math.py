"""The peer-to-peer family's updates, step by step, against an independent NumPy reference
(p2p_reference.py): real Gloo processes in float64 (the ``p2p_runs`` fixture of conftest.py),
every node's parameters after every step equal to the reference's to 1e-12.

Cases (p2p_reference.CASES): D-SGD, Gossip SGD, PDMM-SGD, ADMM-SGD, PDMM-ISVR (piw 1 and 0.5,
with and without the gradient coefficient), ADMM-ISVR (piw 2 with K = 2, and piw 1) and CADMM,
on a 5-node ring, a complete graph of 5 nodes and an irregular 5-node graph given as a
node_list.json (one edge of its K = 2 file lists different slots at its two ends), with K = 1
and K = 2 for every algorithm that uses the edge slots.
"""

from __future__ import annotations

import numpy as np
import pytest

from p2p_reference import CASES, simulate, world_size
from topology.nodes import generated_nodes, load_node_list

pytestmark = pytest.mark.slow

ATOL = 1e-12


def _graph(case: dict, node_lists: dict):
    if case["graph"] in node_lists:
        return load_node_list(node_lists[case["graph"]])
    options = case["options"]
    return generated_nodes(options["graph"], world_size(case), options["round"])


def _stacked(states, key: str) -> np.ndarray:
    """(steps, nodes, ...) of a per-step list saved by every rank."""
    return np.stack([np.stack([t.numpy() for t in s[key]]) for s in states], axis=1)


@pytest.mark.parametrize("name", list(CASES))
def test_every_step_matches_the_numpy_reference(p2p_runs, p2p_node_lists, name):
    case = CASES[name]
    n = world_size(case)
    states = p2p_runs(n)[name]
    graph = _graph(case, p2p_node_lists)
    for rank, state in enumerate(states):  # the worker's graph is the one the reference runs on
        assert state["graph"]["round"] == graph.round, (name, rank)
        assert dict(state["graph"]["slots"]) == dict(graph.slots), (name, rank)
        assert tuple(state["graph"]["neighbours"]) == tuple(graph.neighbours(rank)), (name, rank)
    w0 = states[0]["initial"].numpy()
    for rank, state in enumerate(states):  # prepare broadcasts rank 0's model
        assert np.array_equal(state["initial"].numpy(), w0), (name, rank)
    steps = case["steps"]
    data = [[(states[i]["X"][t].numpy(), states[i]["Y"][t].numpy()) for i in range(n)] for t in range(steps)]
    models, grads = simulate(case["options"], graph, w0, data, steps)
    got_models, got_grads = _stacked(states, "params"), _stacked(states, "grads")
    assert got_models.shape == models.shape == (steps, n, w0.size)
    for t in range(steps):
        np.testing.assert_allclose(got_grads[t], grads[t], rtol=0, atol=ATOL,
                                   err_msg=f"{name}: the gradients of step {t} (nodes x parameters)")
        np.testing.assert_allclose(got_models[t], models[t], rtol=0, atol=ATOL,
                                   err_msg=f"{name}: the models after step {t} (nodes x parameters)")
    # the case moved the models apart (the comparison is not of models that stayed put)
    assert np.abs(models[-1] - w0).max() > 1e-2, name
    assert np.ptp(models[-1], axis=0).max() > 1e-3, name


def test_dsgd_on_a_regular_graph_keeps_the_mean_up_to_the_gradient_steps(p2p_runs):
    """D-SGD with K = 1 on a regular graph (E neighbours each): the mixing matrix (I + A)/(E + 1)
    is doubly stochastic and the copies used are the neighbours' models at the start of the step,
    so ``mean_i w_i^{t+1} = mean_i w_i^t - lr/(E+1) * mean_i g_i^t``, from the saved values alone."""
    name = "dsgd_ring5_k1"
    case = CASES[name]
    states = p2p_runs(world_size(case))[name]
    models, grads = _stacked(states, "params"), _stacked(states, "grads")
    before = np.concatenate([states[0]["initial"].numpy()[None], models[:-1].mean(axis=1)])
    degree, lr = 2, case["options"]["lr"]
    np.testing.assert_allclose(models.mean(axis=1), before - lr / (degree + 1) * grads.mean(axis=1),
                               rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["options"]["algorithm"] == "cadmm"])
def test_cadmm_duals_sum_to_zero(p2p_runs, name):
    """``alpha_i += c * sum_j (x_i - x_j)`` over an undirected graph: ``sum_i alpha_i`` stays 0,
    and the duals move at the end of every round only."""
    case = CASES[name]
    states = p2p_runs(world_size(case))[name]
    alpha = _stacked(states, "alpha")  # (steps, nodes, parameters)
    np.testing.assert_allclose(alpha.sum(axis=1), 0.0, rtol=0, atol=ATOL)
    period = case["options"]["primal_iterations"]
    for t in range(case["steps"]):
        previous = alpha[t - 1] if t else np.zeros_like(alpha[0])
        moved = not np.array_equal(alpha[t], previous)
        assert moved == ((t + 1) % period == 0), (name, t)
