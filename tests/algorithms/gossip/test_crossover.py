"""Crossover-SGD against its math, with real Gloo processes at world sizes 2, 3, 5, 8 (the shared
``gossip_runs`` of conftest.py): R rounds of the real ``after_step`` equal the topology package's
per-segment mixing matrices applied to the stacked initial parameters (fine, equal-byte and coarse
ResNet-18 chromosomes; without fairness or segmentation; bf16 on the wire; overlapped; with local
updates between rounds; buffers and momentum only when asked); the mean is conserved and the model
travels once per round.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gossip_support import (ROUNDS, SEED, cases, check_against_matrices, check_mean_conserved, model_bytes,
                            segment_of, stacked, variants)
from topology import CrossoverSchedule

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("n,name", cases("crossover"))
def test_crossover_equals_mixing_matrices_and_sends_the_model_once_per_round(gossip_runs, n, name):
    states = gossip_runs(n)[name]
    opts = variants(n)[name]["options"]
    schedule = CrossoverSchedule(n, len(states[0]["segments"]), SEED, fair=opts.get("fair", True),
                                 segmented=opts.get("segmented", True))
    wire_bytes = 2 if opts.get("gossip_dtype") == "bf16" else 4
    check_against_matrices(states, schedule.mixing_matrices, tolerance=1e-5 if wire_bytes == 4 else 2e-2)
    if wire_bytes == 2:  # half-precision messages: half the bytes, same mixing up to bf16 rounding
        for state in states:
            assert state["comm"]["bytes_sent"] == ROUNDS * model_bytes(states) // 2
    elif opts.get("fair", True):
        check_mean_conserved(states)  # the global mean of every parameter
        for state in states:  # exactly the model's bytes each way per round
            assert state["comm"]["bytes_sent"] == state["comm"]["bytes_recv"] == ROUNDS * model_bytes(states)
    else:  # no fairness: a rank sends 0..n-1 copies, but the total over ranks is one copy per receiver
        assert sum(s["comm"]["bytes_sent"] for s in states) == n * ROUNDS * model_bytes(states)


@pytest.mark.parametrize("n,name", cases("updates_crossover"))
def test_crossover_with_local_updates_sequential_and_overlapped(gossip_runs, n, name):
    """Sequential: x <- W_t (x + d_t). Overlapped: the round posted at t is mixed at t + 1 as
    x <- x + (W_t - I) s_t, with s_t the snapshot sent; the global mean moves only by the updates."""
    states = gossip_runs(n)[name]
    overlap = variants(n)[name]["options"]["gossip_overlap"]
    schedule = CrossoverSchedule(n, len(states[0]["segments"]), SEED)
    seg, eye = segment_of(states), np.eye(n)
    for tensor in states[0]["initial"]:
        x = stacked(states, "initial", tensor)
        in_flight = None
        for t in range(ROUNDS):
            x = x + np.stack([s["deltas"][t][tensor].double().reshape(-1).numpy() for s in states])
            w = schedule.mixing_matrices(t)[seg[tensor]]
            if not overlap:
                x = w @ x
                continue
            if in_flight is not None:
                x = x + (in_flight[0] - eye) @ in_flight[1]
            in_flight = (w, x.copy())
        if in_flight is not None:  # flush()
            x = x + (in_flight[0] - eye) @ in_flight[1]
        np.testing.assert_allclose(stacked(states, "final", tensor), x, rtol=1e-5, atol=1e-5, err_msg=tensor)
        total_update = sum(np.stack([s["deltas"][t][tensor].double().reshape(-1).numpy() for s in states])
                           for t in range(ROUNDS))
        np.testing.assert_allclose(stacked(states, "final", tensor).mean(0),
                                   (stacked(states, "initial", tensor) + total_update).mean(0), atol=1e-5)


@pytest.mark.parametrize("n,name", cases("buffers_crossover") + cases("momentum"))
def test_crossover_mixes_buffers_and_momentum_only_when_asked(gossip_runs, n, name):
    """--gossip-buffers: BatchNorm statistics follow the segments' matrices; --gossip-momentum: so do
    the momentum buffers; by default momentum buffers (and buffers) are left as they were."""
    states = gossip_runs(n)[name]
    opts = variants(n)[name]["options"]
    schedule = CrossoverSchedule(n, len(states[0]["segments"]), SEED)
    check_against_matrices(states, schedule.mixing_matrices)
    for what, mixed in (("_buffers", opts.get("gossip_buffers", False)),
                        ("_momentum", opts.get("gossip_momentum", False))):
        assert states[0]["initial" + what], what  # the variant has such tensors
        if mixed:
            check_against_matrices(states, schedule.mixing_matrices, what=what)
            check_mean_conserved(states, what)
        else:
            for s in states:
                for tensor, value in s["initial" + what].items():
                    assert torch.equal(s["final" + what][tensor], value), tensor
    extra = sum(t.numel() * t.element_size() for t in states[0]["initial_buffers"].values()) * opts.get(
        "gossip_buffers", False) + model_bytes(states) * opts.get("gossip_momentum", False)
    for s in states:  # the mixed tensors travel, once per round
        assert s["comm"]["bytes_sent"] == ROUNDS * (model_bytes(states) + extra)


@pytest.mark.parametrize("n,name", cases("coarse_resnet18"))
def test_coarse_chromosome_of_resnet18(gossip_runs, n, name):
    """--chromosome coarse on torchvision's ResNet-18: 6 segments (stem, layer1..4, fc), each mixed
    with its own matrix; the mean of every parameter is conserved; the model travels once a round."""
    states = gossip_runs(n)[name]
    assert [names[0].split(".")[0] for names in states[0]["segments"]] == ["conv1", "layer1", "layer2", "layer3",
                                                                           "layer4", "fc"]
    assert states[0]["segments"][0] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    schedule = CrossoverSchedule(n, 6, SEED)
    assert any(len({tuple(r) for r in schedule.peers(t).recv_from}) > 1 for t in range(2))  # segments differ
    check_against_matrices(states, schedule.mixing_matrices)
    check_mean_conserved(states)
    for s in states:
        assert s["comm"]["bytes_sent"] == s["comm"]["bytes_recv"] == 2 * model_bytes(states)
