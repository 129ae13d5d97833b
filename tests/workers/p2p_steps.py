"""One rank of the peer-to-peer math tests (started by the ``p2p_runs`` fixture of
tests/algorithms/p2p/conftest.py via the local launcher).

For each variant (all ranks run the same variants in the same order: every ``prepare`` creates
its per-edge Gloo groups collectively) it builds the algorithm from a float64 config, prepares a
float64 ``nn.Linear(5, 3)`` (rank 0's weights are broadcast), then takes T steps through the
algorithm's real hooks over real Gloo messages: a full-batch least-squares gradient of this
node's own data (drawn afresh every step from a generator seeded by the rank), ``before_step``,
``optimizer_step`` (the local SGD step for D-SGD and Gossip SGD; the primal-dual methods and
CADMM update the model themselves), ``after_step``. Saved to OUT/<variant>/rank{R}.pt: the
initial flat parameters, and per step the data, the gradient and the flat parameters after the
step (and CADMM's dual alpha), plus the graph the algorithm used (the reference must use the same).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from crossover_sgd.algorithms import build_algorithm, make_config
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, shutdown

IN_FEATURES, OUT_FEATURES, SAMPLES = 5, 3, 8


def flat_params(model: nn.Module) -> torch.Tensor:
    """The parameters as one float64 vector: the weight row-major, then the bias."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def run_variant(ctx, out: Path, name: str, spec: dict) -> None:
    options, steps = spec["options"], spec["steps"]
    config = make_config(dtype="float64", seed=0, timeout=60.0, momentum=0.0, weight_decay=0.0, **options)
    torch.manual_seed(100 + ctx.rank)  # a different initial model per rank: prepare must broadcast rank 0's
    model = nn.Linear(IN_FEATURES, OUT_FEATURES).double()
    algorithm = build_algorithm(ctx, config)
    algorithm.prepare(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    data = torch.Generator().manual_seed(7000 + ctx.rank)  # this node's own data
    state = {"initial": flat_params(model), "X": [], "Y": [], "grads": [], "params": [],
             "graph": {"round": algorithm.nodes.round, "slots": dict(algorithm.nodes.slots),
                       "neighbours": list(algorithm.nodes.neighbours(ctx.rank))}}
    for _ in range(steps):
        x = torch.randn(SAMPLES, IN_FEATURES, generator=data, dtype=torch.float64)
        y = torch.randn(SAMPLES, OUT_FEATURES, generator=data, dtype=torch.float64)
        optimizer.zero_grad(set_to_none=True)
        loss = 0.5 * ((model(x) - y) ** 2).sum() / SAMPLES
        loss.backward()
        state["X"].append(x)
        state["Y"].append(y)
        state["grads"].append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
        algorithm.before_step(optimizer)
        algorithm.optimizer_step(lambda: optimizer.step(), optimizer)
        algorithm.after_step(optimizer)
        state["params"].append(flat_params(model))
        if hasattr(algorithm, "alpha"):  # CADMM's dual
            state.setdefault("alpha", []).append(algorithm.alpha.clone())
    algorithm.flush()
    algorithm.finish("finished")  # as the training loop does: ends this variant's heartbeat
    (out / name).mkdir(parents=True, exist_ok=True)
    torch.save(state, out / name / f"rank{ctx.rank}.pt")


def main() -> None:
    out, variants = Path(sys.argv[1]), json.loads(sys.argv[2])
    ctx = init_distributed(detect_launch(), device=torch.device("cpu"), backend="gloo", timeout_s=120)
    try:
        for name, spec in variants.items():
            run_variant(ctx, out, name, spec)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
