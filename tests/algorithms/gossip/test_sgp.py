"""Stochastic gradient push (SGP, sequential and overlapped, 1 or 2 peers) against its math, with
real Gloo processes at world sizes 2, 3, 5, 8 (the shared ``gossip_runs`` of conftest.py): push-sum
over the SGP paper's exponential graph's mixing matrices, z = x / w; sum(x) is conserved and the weights sum
to n after every round; buffers and momentum travel in the numerator; k copies of the model (plus
the weight) per round.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gossip_support import ROUNDS, cases, model_bytes, stacked, variants
from topology import NPeerExponentialGraph

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("n,name", cases("sgp") + cases("gossip_overlap"))
def test_sgp_push_sum_equals_mixing_matrices_conserves_sums(gossip_runs, n, name):
    states = gossip_runs(n)[name]
    options = variants(n)[name]["options"]
    k = options["sgp_peers"]
    graph = NPeerExponentialGraph(n, k)  # the SGP paper's multi-peer graph: offsets j (k+1)^i
    matrices = [graph.mixing_matrix(t) for t in range(ROUNDS)]

    def push_sum(x):
        """x and w follow the same recursion; with overlap the sent shares arrive one round late."""
        share, in_flight = 1.0 / (k + 1), np.zeros_like(x)
        for w_matrix in matrices:
            if options.get("gossip_overlap"):
                x = x + in_flight
                in_flight = (w_matrix - share * np.eye(n)) @ x
                x = share * x
            else:
                x = w_matrix @ x
        return x + in_flight  # flush()

    weights = push_sum(np.ones((n, 1)))[:, 0]
    assert sum(s["weight"] for s in states) == pytest.approx(n)
    np.testing.assert_allclose([s["weight"] for s in states], weights, atol=1e-12)
    for tensor in states[0]["initial"]:  # parameters hold z = x / w
        z = push_sum(stacked(states, "initial", tensor)) / weights[:, None]
        np.testing.assert_allclose(stacked(states, "final", tensor), z, rtol=1e-5, atol=1e-5, err_msg=tensor)
    x0 = np.stack([torch.cat([v.reshape(-1) for v in s["initial"].values()]).double().numpy() for s in states])
    x_final = np.stack([s["numerators"].double().numpy() for s in states])
    np.testing.assert_allclose(x_final.sum(0), x0.sum(0), atol=1e-4)  # sum(x) conserved
    for state in states:  # k copies of the model (plus the 8-byte weight) per round
        assert state["comm"]["bytes_sent"] == ROUNDS * k * (model_bytes(states) + 8)


@pytest.mark.parametrize("n,name", cases("buffers_momentum_sgp"))
def test_sgp_push_sum_mixes_buffers_and_momentum(gossip_runs, n, name):
    """Buffers and momentum travel with the parameters in push-sum's numerator: z = (P^R x) / w."""
    states = gossip_runs(n)[name]
    graph = NPeerExponentialGraph(n, 1)
    weights = np.ones(n)
    matrices = [graph.mixing_matrix(t) for t in range(ROUNDS)]
    for w_matrix in matrices:
        weights = w_matrix @ weights
    for what in ("", "_buffers", "_momentum"):
        assert states[0]["initial" + what]
        for tensor in states[0]["initial" + what]:
            x = stacked(states, "initial" + what, tensor)
            for w_matrix in matrices:
                x = w_matrix @ x
            np.testing.assert_allclose(stacked(states, "final" + what, tensor), x / weights[:, None],
                                       rtol=1e-5, atol=1e-5, err_msg=tensor)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_push_sum_weights_sum_to_n_after_every_round(gossip_runs, n):
    """Sequential push-sum: after every round (not only at the end) the weights sum to n."""
    runs = gossip_runs(n)
    for name in (name for name in runs if name.startswith("sgp_k")):
        per_round = np.array([s["weights_per_round"] for s in runs[name]])  # ranks x rounds
        assert per_round.shape == (n, ROUNDS), name
        np.testing.assert_allclose(per_round.sum(axis=0), n, rtol=0, atol=1e-12, err_msg=name)
        assert (per_round > 0).all(), name
