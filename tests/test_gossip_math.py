"""The gossip algorithms against their math, with real Gloo processes at world sizes 2, 3, 4, 5, 8.

For every variant, R rounds of the real ``after_step`` must equal the topology package's mixing
matrices applied to the stacked initial parameters (and buffers or momentum when those are mixed);
crossover rounds conserve the mean, push-sum conserves sum(x) and keeps sum(w) = n; the traffic
per round is what the algorithm defines. Hierarchical crossover is also checked over real SGD
steps with different gradients on every rank: intra-node average, step, inter-node mixing.
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
TRAIN = {"lr": 0.1, "momentum": 0.9}  # SGD of the train_* variants


def variants(n: int) -> dict:
    if n == 4:  # only hierarchical layouts (the other algorithms run at 2, 3, 5, 8)
        return hierarchical_variants(n)
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
    # --gossip-buffers / --gossip-momentum with a BatchNorm model; by default momentum stays local
    bn = {"model": "bn_cnn", "rounds": ROUNDS, "momentum_init": True}
    specs["buffers_crossover"] = {**bn, "options": {"algorithm": "crossover", "segments": 3, "gossip_buffers": True}}
    specs["momentum_crossover"] = {**bn, "options": {"algorithm": "crossover", "segments": 3,
                                                     "gossip_momentum": True}}
    specs["momentum_local_crossover"] = {**bn, "options": {"algorithm": "crossover", "segments": 3}}
    specs["buffers_momentum_sgp"] = {**bn, "options": {"algorithm": "sgp", "sgp_peers": 1, "gossip_buffers": True,
                                                       "gossip_momentum": True}}
    # --gossip-dtype fp32 on an fp32 model: the model's dtype, so the same as --gossip-dtype model
    hier_base = "hier_g2" if "hier_g2" in v else "hier_g1"
    for base in ("crossover_segments3", "sgp_k1", hier_base):
        specs[f"fp32wire_{base}"] = {"options": {**v[base], "gossip_dtype": "fp32"}, "rounds": ROUNDS}
    if n == 3:  # the coarse chromosome of a real ResNet (stem, layer1..4, fc)
        specs["coarse_resnet18"] = {"model": "resnet18", "rounds": 2,
                                    "options": {"algorithm": "crossover", "chromosome": "coarse"}}
    specs.update(hierarchical_variants(n))
    return specs


def hierarchical_variants(n: int) -> dict:
    """Real SGD steps (n = 4: G = 2; n = 8: G = 2, 4), balanced bytes per GPU, ``--groupnum``."""
    specs = {}
    if n not in (4, 8):
        return specs
    for g in (2, 4) if n == 8 else (2,):
        hier = {"algorithm": "hierarchical-crossover", "gpu_per_node": g}
        specs[f"train_hier_g{g}"] = {"model": "bn_cnn", "rounds": 3, "train": TRAIN,
                                     "options": {**hier, "segments": 3}}
        specs[f"train_hier_buffers_g{g}"] = {"model": "bn_cnn", "rounds": 3, "train": TRAIN,
                                             "options": {**hier, "segments": 3, "gossip_buffers": True}}
        specs[f"bytes_hier_g{g}"] = {"model": "mlp8", "rounds": ROUNDS, "options": {**hier, "segments": 8}}
    if n == 4:
        specs["groupnum_hier"] = {"rounds": ROUNDS, "options": {"algorithm": "hierarchical-crossover",
                                                                "segments": 4, "groupnum": 2}}
    return specs


WORLD_SIZES = (2, 3, 4, 5, 8)


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


def node_mean(x, g):
    """``kron(I_N, J_G) @ x``: every rank gets its node's mean."""
    return np.repeat(x.reshape(-1, g, x.shape[1]).mean(1), g, axis=0)


def segment_of(states):
    return {tensor: i for i, names in enumerate(states[0]["segments"]) for tensor in names}


def model_bytes(states):
    return sum(t.numel() * t.element_size() for t in states[0]["initial"].values())


def check_against_matrices(states, matrices_of_round, tolerance=1e-5, what=""):
    """final = W_{R-1} ... W_0 initial for the tensors of ``initial{what}`` (each with its segment's W)."""
    seg = segment_of(states)
    for name in states[0]["initial" + what]:
        x = stacked(states, "initial" + what, name)
        for t in range(states[0]["rounds"]):
            x = matrices_of_round(t)[seg[name]] @ x
        np.testing.assert_allclose(stacked(states, "final" + what, name), x, rtol=tolerance, atol=tolerance,
                                   err_msg=name)


def check_node_sends_the_model_once_per_round(states, g):
    """Hierarchical: the G ranks of each node together send the whole model between nodes per round."""
    for node in range(len(states) // g):
        assert sum(s["inter"]["bytes_sent"] for s in states[node * g:(node + 1) * g]) == ROUNDS * model_bytes(states)


def check_mean_conserved(states, what=""):
    for name in states[0]["initial" + what]:
        np.testing.assert_allclose(stacked(states, "final" + what, name).mean(0),
                                   stacked(states, "initial" + what, name).mean(0), atol=1e-6, err_msg=name)


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
    check_mean_conserved(states)
    check_node_sends_the_model_once_per_round(states, g)
    for s in states:  # each local rank carries its own share of the segments
        assert s["inter"]["bytes_sent"] == ROUNDS * s["owned_bytes"]
    if g > 1:
        assert max(s["owned_bytes"] for s in states) < model_bytes(states) * 0.75  # every GPU carries only a share


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


@pytest.mark.parametrize("n,name", cases("buffers_momentum_sgp"))
def test_sgp_push_sum_mixes_buffers_and_momentum(gossip_runs, n, name):
    """Buffers and momentum travel with the parameters in push-sum's numerator: z = (P^R x) / w."""
    states = gossip_runs(n)[name]
    graph = ExponentialGraph(n, k=1)
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


@pytest.mark.parametrize("n,name", cases("fp32wire"))
def test_fp32_wire_on_an_fp32_model_is_the_model_dtype(gossip_runs, n, name):
    """--gossip-dtype fp32 is accepted by every gossip algorithm; on an fp32 model it is no cast at
    all: the same values, bit for bit, and the same bytes as --gossip-dtype model."""
    runs = gossip_runs(n)
    states, reference = runs[name], runs[name[len("fp32wire_"):]]
    for mine, ref in zip(states, reference):
        for tensor, value in ref["final"].items():
            assert torch.equal(mine["final"][tensor], value), tensor
        for key in ("bytes_sent", "bytes_recv", "rounds"):
            assert mine["comm"][key] == ref["comm"][key] > 0
        if "inter" in ref:
            assert mine["inter"]["bytes_sent"] == ref["inter"]["bytes_sent"]


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


@pytest.mark.parametrize("n", [3, 8])
def test_every_round_posts_all_its_messages_in_one_batch(gossip_runs, n):
    """All sends and receives of a round (every segment, every peer) go out in a single
    ``batch_isend_irecv``: no segment waits for another, no per-segment barrier."""
    for name, states in gossip_runs(n).items():
        counts = np.array([s["batches_per_round"] for s in states])  # ranks x rounds
        assert counts.shape == (n, states[0]["rounds"]), name
        if "inter" in states[0]:  # hierarchical
            # a local rank that carries no segment this round posts nothing; the others one batch
            assert counts.max() == 1 and set(np.unique(counts)) <= {0, 1}, (name, counts)
        else:
            assert (counts == 1).all(), (name, counts)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_push_sum_weights_sum_to_n_after_every_round(gossip_runs, n):
    """Sequential push-sum: after every round (not only at the end) the weights sum to n."""
    runs = gossip_runs(n)
    for name in (name for name in runs if name.startswith("sgp_k")):
        per_round = np.array([s["weights_per_round"] for s in runs[name]])  # ranks x rounds
        assert per_round.shape == (n, ROUNDS), name
        np.testing.assert_allclose(per_round.sum(axis=0), n, rtol=0, atol=1e-12, err_msg=name)
        assert (per_round > 0).all(), name
