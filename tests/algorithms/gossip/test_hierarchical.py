"""Hierarchical Crossover-SGD against its math, with real Gloo processes at world sizes 2, 3, 4, 5, 8
(the shared ``gossip_runs`` of conftest.py): rounds equal the schedule's kron(W_nodes, J_G) mixing
matrices, conserve the mean, and each node sends the model once per round between nodes, split
between its GPUs (M/G each for equal segments); ``--groupnum`` sets the node layout; over real SGD
steps with different gradients on every rank: intra-node average, step, inter-node mixing, and
every node's replicas stay identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gossip_support import (ROUNDS, SEED, TRAIN, cases, check_against_matrices, check_mean_conserved,
                            check_node_sends_the_model_once_per_round, model_bytes, node_mean, segment_of, stacked,
                            variants)
from topology import HierarchicalSchedule

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("n,name", cases("hier"))
def test_hierarchical_equals_mixing_matrices_and_splits_inter_node_bytes(gossip_runs, n, name):
    states = gossip_runs(n)[name]
    opts = variants(n)[name]["options"]
    g = opts["gpu_per_node"]
    schedule = HierarchicalSchedule(n, len(states[0]["segments"]), SEED, local_size=g)
    check_against_matrices(states, schedule.mixing_matrices)
    check_mean_conserved(states)
    check_node_sends_the_model_once_per_round(states, g)
    for s in states:  # each local rank carries its own share of the segments
        assert s["inter"]["bytes_sent"] == ROUNDS * s["owned_bytes"]
    if g > 1:
        assert max(s["owned_bytes"] for s in states) < model_bytes(states) * 0.75  # every GPU carries only a share


def train_variant(n, name):
    opts = variants(n)[name]["options"]
    return opts, opts["gpu_per_node"]


@pytest.mark.parametrize("n,name", cases("train_hier"))
def test_hierarchical_sgd_step_is_node_average_step_then_node_mixing(gossip_runs, n, name):
    """Per step, from each rank's own gradient g (different batches): momentum m <- mu m + J g (J:
    the node average), x <- W_t (x - lr m) with W_t = kron(W_nodes, J_G) per segment. Buffers:
    each rank's forward updates them, then they are node-averaged (J b), and with --gossip-buffers
    mixed as well (W_t J b)."""
    states = gossip_runs(n)[name]
    opts, g = train_variant(n, name)
    steps = states[0]["rounds"]
    schedule = HierarchicalSchedule(n, len(states[0]["segments"]), SEED, local_size=g)
    seg = segment_of(states)
    assert not all(torch.allclose(states[0]["grads"][0][t], states[1]["grads"][0][t])
                   for t in states[0]["initial"])  # local ranks 0 and 1 do have different gradients
    for tensor in states[0]["initial"]:
        x, m = stacked(states, "initial", tensor), 0.0
        for t in range(steps):
            grads = np.stack([s["grads"][t][tensor].double().reshape(-1).numpy() for s in states])
            m = TRAIN["momentum"] * m + node_mean(grads, g)
            x = schedule.mixing_matrices(t)[seg[tensor]] @ (x - TRAIN["lr"] * m)
        np.testing.assert_allclose(stacked(states, "final", tensor), x, rtol=1e-5, atol=1e-5, err_msg=tensor)
    last = steps - 1
    for tensor in states[0]["initial_buffers"]:
        before = np.stack([s["pre_average_buffers"][last][tensor].double().reshape(-1).numpy() for s in states])
        assert not np.allclose(before[0], before[1])  # local ranks saw different batches
        expected = node_mean(before, g)
        if opts.get("gossip_buffers"):
            expected = schedule.mixing_matrices(last)[seg[tensor]] @ expected
        np.testing.assert_allclose(stacked(states, "final_buffers", tensor), expected, rtol=1e-5, atol=1e-6,
                                   err_msg=tensor)


@pytest.mark.parametrize("n,name", cases("train_hier"))
def test_hierarchical_keeps_each_nodes_replicas_identical(gossip_runs, n, name):
    """After real steps on different batches, every node's local ranks hold bit-identical parameters
    and BatchNorm buffers, with or without --gossip-buffers (different nodes differ, beyond 2 nodes)."""
    states = gossip_runs(n)[name]
    _, g = train_variant(n, name)
    for what in ("final", "final_buffers"):
        for node in range(n // g):
            first, *others = states[node * g:(node + 1) * g]
            for other in others:
                for tensor, value in first[what].items():
                    assert torch.equal(other[what][tensor], value), (node, tensor)
        if n // g > 2:  # (two nodes average each other completely every round)
            assert not all(torch.equal(states[0][what][t], states[g][what][t]) for t in states[0][what])


@pytest.mark.parametrize("n,name", cases("bytes_hier"))
def test_hierarchical_inter_node_bytes_per_gpu_are_model_over_g(gossip_runs, n, name):
    """8 equal segments: each GPU's inter-node link carries M/G per round (tolerance 1%; exact for
    this model), a node exactly M; the matrices hold as for any model."""
    states = gossip_runs(n)[name]
    g = variants(n)[name]["options"]["gpu_per_node"]
    total = model_bytes(states)
    schedule = HierarchicalSchedule(n, 8, SEED, local_size=g)
    check_against_matrices(states, schedule.mixing_matrices)
    for s in states:
        assert s["metrics"] == {"inter_node_bytes_sent": s["inter"]["bytes_sent"],
                                "inter_node_bytes_recv": s["inter"]["bytes_recv"]}
        for key in ("bytes_sent", "bytes_recv"):
            assert s["inter"][key] == pytest.approx(ROUNDS * total / g, rel=0.01)
    check_node_sends_the_model_once_per_round(states, g)


@pytest.mark.parametrize("n,name", cases("groupnum_hier"))
def test_hierarchical_groupnum_sets_the_node_layout(gossip_runs, n, name):
    """--groupnum 2 on 4 ranks that the launcher put on one machine: nodes {0, 1} and {2, 3}."""
    states = gossip_runs(n)[name]
    for rank, s in enumerate(states):
        assert s["layout"] == {"node": rank // 2, "local_size": 2, "node_ranks": [rank // 2 * 2, rank // 2 * 2 + 1],
                               "launcher_local_size": 4}
    schedule = HierarchicalSchedule(n, len(states[0]["segments"]), SEED, groupnum=2)
    check_against_matrices(states, schedule.mixing_matrices)
    check_mean_conserved(states)
    check_node_sends_the_model_once_per_round(states, 2)
