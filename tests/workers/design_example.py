"""One rank of tests/algorithms/test_adding_an_algorithm.py: the worked example of docs/design.md
(a neighbour average on a ring), executed as written, takes one round on float64 integer-valued weights.
Writes OUT/rank{R}.pt: the weights before and after the round."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from crossover_sgd.config import TrainConfig
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, shutdown

ROOT = Path(__file__).resolve().parents[2]


def design_example(path: Path) -> dict:
    """tests/support.py's design_example (loaded from its file: tests/ must not shadow ``topology``)."""
    spec = importlib.util.spec_from_file_location("support", ROOT / "tests" / "support.py")
    support = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(support)
    return support.design_example(path)


def main(out: Path) -> None:
    info = detect_launch()
    ctx = init_distributed(info, device=torch.device("cpu"), backend="gloo", timeout_s=60)
    example = design_example(ROOT / "docs" / "design.md")
    model = nn.Linear(3, 2).double()
    algorithm = example["NeighbourAverage"](ctx, TrainConfig())
    algorithm.prepare(model)  # broadcasts rank 0's weights: give each rank its own afterwards
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float64).reshape(p.shape) * (ctx.rank + 1) + 7 * i)
    before = [p.detach().clone() for p in model.parameters()]
    algorithm.after_step(None)
    torch.save({"before": before, "after": [p.detach().clone() for p in model.parameters()],
                "rounds": algorithm.comm.rounds, "bytes_sent": algorithm.comm.bytes_sent}, out / f"rank{ctx.rank}.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
