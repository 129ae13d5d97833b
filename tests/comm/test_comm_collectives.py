"""comm/'s averaging and summing all-reduce with 4 real Gloo processes: over the world and over
groups of consecutive ranks the results equal the float64 arithmetic exactly (integer-valued
inputs), the traffic counted is a ring all-reduce's ``2 (s - 1) / s`` of the payload, and a
one-rank group communicates nothing. Plus the lost-peer helpers without a process group."""

from __future__ import annotations

import sys

import pytest
import torch

from crossover_sgd.comm import first_line, is_communication_failure, peer_failure
from crossover_sgd.errors import PeerError
from crossover_sgd.runtime.local_launcher import launch_local
from support import ROOT

N = 4
WORKER = ROOT / "tests" / "comm" / "comm_ranks.py"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("comm")
    assert launch_local(N, [sys.executable, str(WORKER), str(out), "math"]) == 0
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(N)]


@pytest.mark.slow
def test_average_and_total_over_world_and_consecutive_groups(ranks):
    members = {"world": [[0, 1, 2, 3]] * N, "groups of 4": [[0, 1, 2, 3]] * N,
               "groups of 2": [[0, 1], [0, 1], [2, 3], [2, 3]], "groups of 1": [[r] for r in range(N)]}
    cases = ranks[0]["cases"]
    assert len(cases) == 4 * 2 * 3
    for name, op, form in cases:
        for rank in range(N):
            case = ranks[rank]["cases"][(name, op, form)]
            group = members[name][rank]
            assert case["ranks"] == group, (name, rank)
            size = len(group)
            for i, got in enumerate(case["after"]):
                summed = sum(ranks[m]["cases"][(name, op, form)]["before"][i].double() for m in group)
                expected = (summed / size if op == "average" else summed).to(got.dtype)
                assert torch.equal(got, expected), (name, op, form, rank, i)
            payload = sum(t.numel() * t.element_size() for t in case["before"])
            stats = case["stats"]
            assert stats["bytes_sent"] == stats["bytes_recv"] == 2 * (size - 1) * payload // size
            if size == 1:  # nothing communicated, not even timed
                assert stats == {"bytes_sent": 0, "bytes_recv": 0, "seconds": 0.0, "rounds": 0}
                assert all(torch.equal(a, b) for a, b in zip(case["after"], case["before"]))
            else:
                assert stats["seconds"] > 0
    assert ranks[0]["refused"] == "a group size of 3 does not divide the world size 4"


def test_first_line_cuts_at_a_word_boundary():
    assert first_line(RuntimeError("\n  short message \nsecond line")) == "short message"
    assert first_line(RuntimeError("")) == "RuntimeError"
    cut = first_line(RuntimeError("Connection closed by peer [127.0.0.1]:4242 while receiving"), limit=30)
    assert cut == "Connection closed by peer..."
    assert first_line(RuntimeError("abcde fgh"), limit=8) == "abcde..."
    assert first_line(RuntimeError("x" * 50), limit=10) == "x" * 7 + "..."  # one word: no boundary


def test_is_communication_failure():
    assert is_communication_failure(PeerError("x"))
    assert is_communication_failure(torch.distributed.DistBackendError("x"))
    assert is_communication_failure(RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer"))
    assert is_communication_failure(RuntimeError("Timed out waiting 8000ms for recv operation to complete"))
    assert not is_communication_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_communication_failure(ValueError("timeout must be positive"))


def test_peer_failure_names_the_operation_and_the_ranks():
    cause = RuntimeError("[pair.cc:534] Connection closed by peer [127.0.0.1]:4242\nmore detail")
    with pytest.raises(PeerError) as caught, peer_failure("intra-node average", [2, 3]):
        raise cause
    assert str(caught.value) == ("intra-node average with peer rank(s) [2, 3] failed on rank ?: a peer died or "
                                 "stopped answering ([pair.cc:534] Connection closed by peer [127.0.0.1]:4242)")
    assert caught.value.__cause__ is cause
    original = PeerError("already converted")
    with pytest.raises(PeerError) as caught, peer_failure("average", [0, 1]):
        raise original
    assert caught.value is original
    with pytest.raises(ValueError), peer_failure("average", [0, 1]):
        raise ValueError("not a RuntimeError: passes unchanged")
