"""What every gossip algorithm's rounds share (crossover, SGP, hierarchical crossover; real Gloo
processes, the shared ``gossip_runs`` of conftest.py): all of a round's messages go out in one
``batch_isend_irecv``, and ``--gossip-dtype fp32`` on an fp32 model is no cast at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gossip_support import cases

pytestmark = pytest.mark.slow


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
