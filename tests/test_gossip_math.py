"""The gossip algorithms against their math, with real Gloo processes at world sizes 2, 3, 5, 8.

For every variant, R rounds of the real ``after_step`` must equal the topology package's mixing
matrices applied to the stacked initial parameters; crossover rounds conserve the mean, push-sum
conserves sum(x) and keeps sum(w) = n; the traffic per round is what the algorithm defines.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from crossover_sgd.runtime.local_launcher import launch_local
from support import ROOT
from topology import CrossoverSchedule, ExponentialGraph, HierarchicalSchedule

pytestmark = pytest.mark.slow
ROUNDS = 4
SEED = 11  # the worker's TrainConfig seed


def variants(n: int) -> dict:
    v = {
        "crossover_fine": {"algorithm": "crossover", "chromosome": "fine"},
        "crossover_segments3": {"algorithm": "crossover", "segments": 3},
        "crossover_no_fairness": {"algorithm": "crossover", "segments": 3, "fair": False},
        "crossover_no_segmentation": {"algorithm": "crossover", "segments": 3, "segmented": False},
        "crossover_bf16_wire": {"algorithm": "crossover", "segments": 3, "gossip_dtype": "bf16"},
        "crossover_overlap_fine": {"algorithm": "crossover", "chromosome": "fine", "gossip_overlap": True},
        "sgp_k1": {"algorithm": "sgp", "sgp_peers": 1},
        "gossip_overlap_k1": {"algorithm": "sgp", "sgp_peers": 1, "gossip_overlap": True},
    }
    if n >= 3:
        v["sgp_k2"] = {"algorithm": "sgp", "sgp_peers": 2}
        v["gossip_overlap_k2"] = {"algorithm": "sgp", "sgp_peers": 2, "gossip_overlap": True}
    v["hier_g1"] = {"algorithm": "hierarchical-crossover", "segments": 4, "gpu_per_node": 1}
    if n % 2 == 0 and n >= 4:
        v["hier_g2"] = {"algorithm": "hierarchical-crossover", "segments": 4, "gpu_per_node": 2}
    if n == 8:
        v["hier_g4"] = {"algorithm": "hierarchical-crossover", "chromosome": "fine", "gpu_per_node": 4}
    specs = {name: {"options": options, "rounds": ROUNDS} for name, options in v.items()}
    for overlap in (False, True):  # local updates between rounds, as optimizer steps make them
        options = {"algorithm": "crossover", "segments": 3, "gossip_overlap": overlap}
        specs[f"updates_crossover{'_overlap' if overlap else ''}"] = {"options": options, "rounds": ROUNDS,
                                                                      "updates": True}
    return specs


WORLD_SIZES = (2, 3, 5, 8)


def cases(prefix: str) -> list:
    """(world size, variant) pairs whose variant name starts with ``prefix`` and exists at that size."""
    return [(n, name) for n in WORLD_SIZES for name in variants(n) if name.startswith(prefix)]


@pytest.fixture(scope="module")
def gossip_runs(tmp_path_factory):
    """World size -> {variant: per-rank states}; each world size is launched once, on first use."""
    cache = {}

    def get(n: int) -> dict:
        if n not in cache:
            out = tmp_path_factory.mktemp(f"gossip{n}")
            spec = variants(n)
            worker = [sys.executable, str(ROOT / "tests" / "workers" / "gossip_rounds.py"), str(out), json.dumps(spec)]
            assert launch_local(n, worker) == 0
            cache[n] = {name: [torch.load(out / name / f"rank{r}.pt", weights_only=True) for r in range(n)]
                        for name in spec}
        return cache[n]

    return get


def stacked(states, key, name):
    return np.stack([s[key][name].double().reshape(-1).numpy() for s in states])


def segment_of(states):
    return {tensor: i for i, names in enumerate(states[0]["segments"]) for tensor in names}


def model_bytes(states):
    return sum(t.numel() * t.element_size() for t in states[0]["initial"].values())


def check_against_matrices(states, matrices_of_round, tolerance=1e-5):
    seg = segment_of(states)
    for name in states[0]["initial"]:
        x = stacked(states, "initial", name)
        for t in range(ROUNDS):
            x = matrices_of_round(t)[seg[name]] @ x
        np.testing.assert_allclose(stacked(states, "final", name), x, rtol=tolerance, atol=tolerance, err_msg=name)


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
        for name_ in states[0]["initial"]:  # the global mean of every parameter is conserved
            np.testing.assert_allclose(stacked(states, "final", name_).mean(0),
                                       stacked(states, "initial", name_).mean(0), atol=1e-6)
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


@pytest.mark.parametrize("n,name", cases("sgp"))
def test_sgp_push_sum_equals_mixing_matrices_conserves_sums(gossip_runs, n, name):
    states = gossip_runs(n)[name]
    options = variants(n)[name]["options"]
    k = options["sgp_peers"]
    graph = ExponentialGraph(n, k=k)
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


@pytest.mark.parametrize("n,name", cases("hier"))
def test_hierarchical_equals_mixing_matrices_and_splits_inter_node_bytes(gossip_runs, n, name):
    states = gossip_runs(n)[name]
    opts = variants(n)[name]["options"]
    g = opts["gpu_per_node"]
    schedule = HierarchicalSchedule(n, len(states[0]["segments"]), SEED, local_size=g)
    check_against_matrices(states, schedule.mixing_matrices)
    for name_ in states[0]["initial"]:
        np.testing.assert_allclose(stacked(states, "final", name_).mean(0),
                                   stacked(states, "initial", name_).mean(0), atol=1e-6)
    total = model_bytes(states)
    for node in range(n // g):
        members = states[node * g:(node + 1) * g]
        # the node sends the whole model per round between its G ranks, each its own share
        assert sum(s["inter"]["bytes_sent"] for s in members) == ROUNDS * total
        for s in members:
            assert s["inter"]["bytes_sent"] == ROUNDS * s["owned_bytes"]
    if g > 1:
        assert max(s["owned_bytes"] for s in states) < total * 0.75  # every GPU carries only a share
