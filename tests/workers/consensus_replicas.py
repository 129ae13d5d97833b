"""One rank of tests/training/test_consensus.py (started via the local launcher).

1. Known replicas: rank i holds parameters and BatchNorm buffers ``base + i * delta`` (base and
   delta the same on every rank); ``consensus_model`` is called and its averaged model and distance
   saved to OUT/known/rank{R}.pt.
2. The real training loop: one epoch of Crossover-SGD on the default data in float64, written to
   OUT/train (metrics CSVs and per-rank checkpoints, as ``crossover-sgd train`` writes them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from crossover_sgd.algorithms import build_algorithm, make_config
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, shutdown
from crossover_sgd.training.consensus import consensus_model
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.trainer import Trainer


def known_replicas(rank: int, out: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 3))
    generator = torch.Generator().manual_seed(7)  # the same base and delta on every rank
    with torch.no_grad():
        for t in [*model.parameters(), model[1].running_mean, model[1].running_var]:
            base, delta = torch.randn(t.shape, generator=generator), torch.randn(t.shape, generator=generator)
            t.copy_(base + rank * delta)
    model[1].num_batches_tracked.fill_(rank)
    average, distance = consensus_model(model)
    torch.save({"average": average.state_dict(), "distance": distance,
                "mine": {k: v.clone() for k, v in model.state_dict().items()}}, out / f"rank{rank}.pt")


def main() -> None:
    out = Path(sys.argv[1])
    info = detect_launch()
    ctx = init_distributed(info, device=torch.device("cpu"), backend="gloo", timeout_s=120)
    try:
        (out / "known").mkdir(parents=True, exist_ok=True)
        known_replicas(ctx.rank, out / "known")
        # float64: the test recomputes accuracies from the checkpoints and compares them exactly; in
        # float32 a one-ulp difference of the averaged weights could flip a near-tie of two logits
        config = make_config(algorithm="crossover", chromosome="fine", epochs=1, lr=0.05, seed=3, dtype="float64")
        trainer = Trainer(config, ctx, build_datasets(config), build_algorithm(ctx, config), out / "train")
        (out / "train").mkdir(exist_ok=True)
        trainer.fit()
    finally:
        shutdown()


if __name__ == "__main__":
    main()
