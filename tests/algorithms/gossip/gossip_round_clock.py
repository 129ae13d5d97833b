"""One rank of tests/algorithms/gossip/test_gossip_round_clock.py (a real Gloo process; OUT is the
first argument, the algorithms' options as JSON the second).

For each variant: ``ROUNDS`` rounds through the real hooks, with the traffic counter
``comm.rounds`` overwritten half-way (the schedules must not notice); every round the schedule is
asked for is recorded (a spy on the schedule: the real method still answers). Then a new
instance of the algorithm loads the first one's ``state_dict()`` and runs one more round. Saves
OUT/<variant>/rank{R}.pt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from crossover_sgd.algorithms import build_algorithm, make_config
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, shutdown
from crossover_sgd.training.models import build_model

ROUNDS = 4
TAMPERED = 1000


def spy(algorithm, asked):
    """Record the round of every schedule query (the method of the schedule each algorithm reads)."""
    schedule = getattr(algorithm, "schedule", None) or algorithm.graph
    method = {"hierarchical-crossover": "inter_node_plan", "crossover": "peers", "sgp": "out_peers"}[algorithm.name]
    real = getattr(schedule, method)

    def recorded(*args):
        asked.append(args[-1])  # the round is the last argument of each
        return real(*args)

    setattr(schedule, method, recorded)


def step(algorithm, model, optimizer):
    optimizer.zero_grad(set_to_none=True)
    model(torch.randn(4, 1, 8, 8)).square().mean().backward()
    algorithm.before_step(optimizer)
    optimizer.step()
    algorithm.after_step(optimizer)


def run(ctx, options: dict):
    torch.manual_seed(ctx.rank)
    model = build_model("small_cnn", 10, 1, 8)
    algorithm = build_algorithm(ctx, make_config(seed=3, **options))
    algorithm.prepare(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    asked = []
    spy(algorithm, asked)
    for r in range(ROUNDS):
        if r == ROUNDS // 2:
            algorithm.comm.rounds = TAMPERED
        step(algorithm, model, optimizer)
    algorithm.flush()
    state = algorithm.state_dict()
    result = {"asked": list(asked), "round": algorithm.round, "comm_rounds": algorithm.comm.rounds,
              "state_round": state["round"]}
    again = build_algorithm(ctx, make_config(seed=3, **options))
    again.prepare(model)
    again.load_state_dict(state)
    asked_again = []
    spy(again, asked_again)
    step(again, model, optimizer)
    again.flush()
    result.update({"asked_after_load": asked_again, "round_after_load": again.round,
                   "comm_rounds_after_load": again.comm.rounds})
    return result


def main() -> None:
    out, variants = Path(sys.argv[1]), json.loads(sys.argv[2])
    ctx = init_distributed(detect_launch(), device=torch.device("cpu"), backend="gloo", timeout_s=120)
    try:
        for name, options in variants.items():
            result = run(ctx, options)
            (out / name).mkdir(parents=True, exist_ok=True)
            torch.save(result, out / name / f"rank{ctx.rank}.pt")
    finally:
        shutdown()


if __name__ == "__main__":
    main()
