"""The overlap modes really overlap: ``after_step`` returns before the peer has even posted its
round (a blocking step would deadlock the worker), and ``flush()`` then mixes the round."""

from __future__ import annotations

import sys

import pytest
import torch

from crossover_sgd.runtime.local_launcher import launch_local
from support import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("algorithm", ["sgp", "crossover"])
def test_overlapped_after_step_does_not_wait_for_the_peer(tmp_path, algorithm):
    worker = [sys.executable, str(ROOT / "tests" / "workers" / "overlap_nonblocking.py"), str(tmp_path), algorithm]
    assert launch_local(2, worker) == 0
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for rank, state in enumerate(ranks):
        # nothing mixed yet when after_step returns (z = x / w is unchanged for SGP)
        assert all(torch.allclose(t, torch.full_like(t, float(rank))) for t in state["after_step"])
        # two ranks: the round averages the pair, 0 and 1 -> 0.5 everywhere
        assert all(torch.allclose(t, torch.full_like(t, 0.5)) for t in state["flushed"])
