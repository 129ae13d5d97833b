"""One rank of the gossip-math tests (started by tests/test_gossip_math.py via the local launcher).

For each variant it gives every rank (every node, for hierarchical variants) distinct parameters,
runs R mixing rounds through the algorithm's real ``after_step`` over real Gloo point-to-point
messages, and saves initial and final tensors, segment names and traffic to OUT/<variant>/rank{R}.pt.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from crossover_sgd.algorithms import build_algorithm
from crossover_sgd.config import TrainConfig
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, logical_placement, shutdown
from crossover_sgd.training.models import build_model


def run_variant(ctx, out: Path, name: str, rounds: int, options: dict, updates: bool = False) -> None:
    config = TrainConfig(seed=11, **options)
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, 8)
    algorithm = build_algorithm(ctx, config)
    algorithm.prepare(model)
    key = ctx.node_id if config.algorithm == "hierarchical-crossover" else ctx.rank  # nodes start uniform
    generator = torch.Generator().manual_seed(1000 + key)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    deltas = []  # with updates: a local change before each round, as an optimizer step would make
    for _ in range(rounds):
        algorithm.before_step(optimizer)
        if updates:
            deltas.append({n: torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()})
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.add_(deltas[-1][n])
        algorithm.after_step(optimizer)
    algorithm.flush()
    state = {"initial": initial, "final": {n: p.detach().clone() for n, p in model.named_parameters()},
             "segments": [s.names for s in algorithm.segments], "comm": algorithm.comm.as_dict(),
             "rounds": rounds, "deltas": deltas}
    if hasattr(algorithm, "inter_comm"):
        state["inter"] = algorithm.inter_comm.as_dict()
        state["owned_bytes"] = sum(s.nbytes for s, owner in zip(algorithm.segments, algorithm.owner_rank)
                                   if owner == ctx.rank)
    if hasattr(algorithm, "weight"):
        state["weight"] = float(algorithm.weight)
        state["numerators"] = torch.cat([x.reshape(-1) for x in algorithm.numerators])
    (out / name).mkdir(parents=True, exist_ok=True)
    torch.save(state, out / name / f"rank{ctx.rank}.pt")


def main() -> None:
    out, variants = Path(sys.argv[1]), json.loads(sys.argv[2])
    info = detect_launch()
    ctx = init_distributed(info, device=torch.device("cpu"), backend="gloo", timeout_s=120)
    try:
        for name, spec in variants.items():
            local_rank, local_size, node = logical_placement(info, spec["options"].get("gpu_per_node"))
            variant_ctx = replace(ctx, local_rank=local_rank, local_size=local_size, node_id=node)
            run_variant(variant_ctx, out, name, spec["rounds"], spec["options"], spec.get("updates", False))
    finally:
        shutdown()


if __name__ == "__main__":
    main()
