"""The ``gossip_runs`` fixture of the gossip-math tests (test_crossover.py, test_sgp.py,
test_hierarchical.py, test_gossip_rounds.py): session-scoped, so each world size's real Gloo
processes (tests/workers/gossip_rounds.py, every variant of gossip_support.variants) run only once."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from crossover_sgd.runtime.local_launcher import launch_local
from gossip_support import variants
from support import ROOT


@pytest.fixture(scope="session")
def gossip_runs(tmp_path_factory):
    """World size -> {variant: per-rank states}; each world size is launched once per session, on
    first use, for all the test files of this folder."""
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
