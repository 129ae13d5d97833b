"""One rank of tests/training/test_lars_amp_training.py: drives the real Trainer step by step.

Variants (all in one process group):
* ``nonfinite-sgd`` / ``nonfinite-lars``: a crossover run where rank 1's second step sees an
  infinite input; that step must be skipped on rank 1 only and no rank may hold (or receive)
  non-finite values.
* ``norm-sync``: LARS with ``sync_lars_group_size=2``: the norm hook must return the norms of the
  group sums of weights and gradients.
Results go to OUT/<variant>/rank{R}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from crossover_sgd.algorithms import build_algorithm, make_config
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, shutdown
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.trainer import Trainer


def trainer_for(ctx, out: Path, **options) -> Trainer:
    config = make_config(batch_size=16, epochs=4, lr=0.05, seed=3, **options)
    return Trainer(config, ctx, build_datasets(config), build_algorithm(ctx, config), out)


def batches(trainer: Trainer, poison: bool):
    trainer.sampler.set_epoch(0)
    inputs, targets = next(iter(trainer.loader))
    if poison:
        inputs = inputs.clone()
        inputs[0] = float("inf")
    return [(inputs, targets)]


def nonfinite(ctx, out: Path, name: str, lars: bool) -> dict:
    trainer = trainer_for(ctx, out, algorithm="crossover", lars=lars, wd_schedule=True, lr_schedule="cosine",
                          weight_decay=1e-3)
    trainer.train_step(batches(trainer, poison=False))
    momentum_before = [trainer.optimizer.state[p]["momentum_buffer"].clone() for p in trainer.model.parameters()]
    trainer.train_step(batches(trainer, poison=ctx.rank == 1))
    momentum_after = [trainer.optimizer.state[p]["momentum_buffer"] for p in trainer.model.parameters()]
    return {
        "finite": all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters()),
        "skipped": int(trainer.precision.skipped),
        "momentum_unchanged": all(torch.equal(a, b) for a, b in zip(momentum_before, momentum_after)),
        "weight_decay": [g["weight_decay"] for g in trainer.optimizer.param_groups],
        "expected_weight_decay": [g["base_weight_decay"] * trainer.schedule.factor(1)
                                  for g in trainer.optimizer.param_groups],
    }


def norm_sync(ctx, out: Path) -> dict:
    trainer = trainer_for(ctx, out, algorithm="crossover", lars=True, sync_lars_group_size=2)
    inputs, targets = batches(trainer, poison=False)[0]
    trainer.criterion(trainer.train_model(inputs), targets).backward()
    params = trainer.optimizer.lars_parameters()
    w_sq = torch.stack([p.detach().norm() for p in params]).square()
    g_sq = torch.stack([p.grad.norm() for p in params]).square()
    got_w, got_g = trainer.norm_sync(w_sq, g_sq)
    expected = []
    for tensors in ([p.detach() for p in params], [p.grad for p in params]):
        flat = torch.cat([t.reshape(-1) for t in tensors])
        gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
        dist.all_gather(gathered, flat)
        mine = ctx.rank // 2 * 2
        summed = gathered[mine] + gathered[mine + 1]
        expected.append(torch.stack([chunk.norm() for chunk in summed.split([t.numel() for t in tensors])]).square())
    return {"w_error": float((got_w - expected[0]).abs().max() / expected[0].max()),
            "g_error": float((got_g - expected[1]).abs().max() / expected[1].max()),
            "local_differs": float((w_sq - got_w).abs().max())}


def main() -> None:
    out = Path(sys.argv[1])
    ctx = init_distributed(detect_launch(), device=torch.device("cpu"), backend="gloo", timeout_s=120)
    try:
        results = {"nonfinite-sgd": nonfinite(ctx, out, "sgd", lars=False),
                   "nonfinite-lars": nonfinite(ctx, out, "lars", lars=True),
                   "norm-sync": norm_sync(ctx, out)}
        torch.save(results, out / f"rank{ctx.rank}.pt")
    finally:
        shutdown()


if __name__ == "__main__":
    main()
