"""The ``p2p_runs`` fixture of the peer-to-peer math tests (test_p2p_math.py): session-scoped,
so each world size's real Gloo processes (tests/workers/p2p_steps.py, every case of
p2p_reference.CASES with that many nodes, one after the other) run only once."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from crossover_sgd.runtime.local_launcher import launch_local
from p2p_reference import CASES, NODE_LISTS, world_size
from support import ROOT


@pytest.fixture(scope="session")
def p2p_node_lists(tmp_path_factory):
    """NODE_LISTS key -> the path of its node_list.json."""
    folder = tmp_path_factory.mktemp("p2p_node_lists")
    paths = {}
    for key, content in NODE_LISTS.items():
        paths[key] = folder / f"{key}.json"
        paths[key].write_text(json.dumps(content, indent=2))
    return paths


@pytest.fixture(scope="session")
def p2p_runs(tmp_path_factory, p2p_node_lists):
    """World size -> {case: per-rank states}; each world size is launched once per session, on
    first use."""
    cache = {}

    def get(n: int) -> dict:
        if n not in cache:
            out = tmp_path_factory.mktemp(f"p2p{n}")
            spec = {}
            for name, case in CASES.items():
                if world_size(case) == n:
                    options = dict(case["options"])
                    if case["graph"] in p2p_node_lists:
                        options["node_list"] = str(p2p_node_lists[case["graph"]])
                    spec[name] = {"options": options, "steps": case["steps"]}
            worker = [sys.executable, str(ROOT / "tests" / "workers" / "p2p_steps.py"), str(out), json.dumps(spec)]
            assert launch_local(n, worker) == 0
            cache[n] = {name: [torch.load(out / name / f"rank{r}.pt", weights_only=True) for r in range(n)]
                        for name in spec}
        return cache[n]

    return get
