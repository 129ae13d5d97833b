"""On a strongly convex problem split non-IID over 4 nodes of a ring (L2-regularised logistic
regression on the digits, full-batch gradients, float64), the primal-dual methods reach the
centralized optimum of ``sum_i f_i`` (found by ``torch.optim.LBFGS`` in one process), while
D-SGD with a constant step stays measurably biased: its fixed point is a consensus-weighted
compromise of the local optima, not the optimum (the gradient of sum_i f_i is not zero there).

Why the exact methods can be exact: at a fixed point of PDMM/ADMM the duals satisfy
``z_{i|j} - z_{j|i} = 2 A_{i|j} w`` on every edge, so the dual terms cancel over each edge and the
nodes' gradients sum to zero; CADMM's duals sum to zero over the nodes for the same reason.
PDMM-SGD weighs node i's gradient by ``E_i``: on the ring (E = 2 everywhere) that is the optimum
too, but reached far more slowly (measured: 1.4e-5 after 5,000 steps at lr 2, 1.1e-2 after 1,500
at lr 4), too slow for this test; its update is checked step by step in test_p2p_math.py.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from torch import nn

from crossover_sgd.runtime.local_launcher import launch_local
from support import ROOT

pytestmark = pytest.mark.slow

NODES, STEPS = 4, 1000
WORKER = ROOT / "tests" / "workers" / "p2p_convex.py"
#: name: worker spec (steps: STEPS unless it says otherwise); the tolerance on ||w_i - w*|| / ||w*||
#: (LBFGS's own is ~1e-7). Each method's steps reach the reference's own precision, 3.6e-8, with
#: a margin (the runs are deterministic: float64, full batch, lockstep exchanges). Measured: PDMM-ISVR
#: 8.7e-7 after 600 steps, 3.6e-8 after 1,000; ADMM-ISVR 2.5e-7 after 1,000, 3.6e-8 after 1,500;
#: CADMM 6.0e-5 after 1,000, 3.9e-8 after 2,000 (all three 3.6e-8 after 2,500).
RUNS = {
    "pdmm-isvr": ("pdmm-isvr:lr=4.0", 1e-6),
    "admm-isvr": ("admm-isvr:lr=4.0,steps=1500", 1e-6),
    "cadmm": ("cadmm:lr=1.0,rho_init=0.1,steps=2000", 1e-6),
}
#: D-SGD's error settles at ~4e-2 (4.1e-2 after 1,000 steps, 3.9e-2 after 2,500: its fixed point).
DSGD = "dsgd:lr=1.0"


def _worker_module():
    spec = importlib.util.spec_from_file_location("p2p_convex", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("convex")
    specs = [spec for spec, _ in RUNS.values()] + [DSGD]
    assert launch_local(NODES, [sys.executable, str(WORKER), str(out), str(STEPS), *specs]) == 0
    return {spec.split(":")[0]: [torch.cat([p.reshape(-1) for p in torch.load(out / spec.split(":")[0] /
                                                                            f"rank{r}.pt")])
                                 for r in range(NODES)] for spec in specs}


@pytest.fixture(scope="module")
def optimum():
    worker = _worker_module()
    data = [worker.node_data(k, NODES) for k in range(NODES)]
    torch.manual_seed(0)
    model = nn.Linear(64, 10).double()
    solver = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=1000, tolerance_grad=1e-13,
                               tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        solver.zero_grad()
        loss = sum(worker.local_loss(model, x, y) for x, y in data)
        loss.backward()
        return loss

    for _ in range(5):
        solver.step(closure)
    closure()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert grad.norm() < 1e-7  # the reference is the optimum
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("name", list(RUNS))
def test_primal_dual_methods_reach_the_centralized_optimum(runs, optimum, name):
    tolerance = RUNS[name][1]
    for node, w in enumerate(runs[name]):
        assert ((w - optimum).norm() / optimum.norm()).item() < tolerance, (name, node)


def test_dsgd_with_a_constant_step_stays_biased(runs, optimum):
    errors = [((w - optimum).norm() / optimum.norm()).item() for w in runs["dsgd"]]
    assert min(errors) > 1e-2, errors  # ~4e-2: far above the exact methods' 1e-6
    exact = max(((w - optimum).norm() / optimum.norm()).item() for w in runs["pdmm-isvr"])
    assert min(errors) > 1000 * exact
