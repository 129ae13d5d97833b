"""Shared by the gossip-math tests of this folder (test_crossover.py, test_sgp.py, test_hierarchical.py,
test_gossip_rounds.py): the variants that tests/workers/gossip_rounds.py runs at world sizes 2, 3, 4,
5, 8 (the ``gossip_runs`` fixture of conftest.py launches each world size once per session), the
(world size, variant) cases of each test, and the checks against the mixing matrices.

For every variant, R rounds of the real ``after_step`` must equal the topology package's mixing
matrices applied to the stacked initial parameters (and buffers or momentum when those are mixed);
crossover rounds conserve the mean, push-sum conserves sum(x) and keeps sum(w) = n; the traffic
per round is what the algorithm defines. Hierarchical crossover is also checked over real SGD
steps with different gradients on every rank: intra-node average, step, inter-node mixing.
"""

from __future__ import annotations

import numpy as np

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
