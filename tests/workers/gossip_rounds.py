"""One rank of the gossip-math tests (started by the ``gossip_runs`` fixture of
tests/algorithms/gossip/conftest.py via the local launcher).

For each variant it gives every rank (every node, for hierarchical variants) distinct parameters
and floating-point buffers (and momentum buffers with ``momentum_init``), runs R rounds through
the algorithm's real hooks over real Gloo messages, and saves initial and final tensors, segment
names, traffic and the node layout to OUT/<variant>/rank{R}.pt.

Mixing variants call ``before_step``/``after_step`` with no gradients (optionally adding a random
local update before each round). ``train`` variants take real SGD steps instead: forward and
backward on a batch that differs on every rank, ``before_step``, ``optimizer.step()``,
``after_step``; each step's raw gradients and buffers (before the intra-node stage) are saved.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict

import torch
import torch.distributed as dist
from torch import nn

from crossover_sgd.algorithms import build_algorithm, make_config
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, logical_placement, shutdown
from crossover_sgd.training.models import build_model


def make_model(name: str) -> nn.Module:
    """``small_cnn``; ``bn_cnn`` (with BatchNorm); ``mlp8`` (8 equal Linear layers); ``resnet18``."""
    if name == "bn_cnn":
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                             nn.Flatten(), nn.Linear(16, 10))
    if name == "mlp8":
        return nn.Sequential(*[nn.Linear(16, 16) for _ in range(8)])
    if name == "resnet18":
        return build_model("resnet18", 10, 3, 32)
    return build_model("small_cnn", 10, 1, 8)


def float_buffers(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers() if b.is_floating_point()}


def params(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def momenta(model: nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, torch.Tensor]:
    return {f"{n}:momentum": optimizer.state[p]["momentum_buffer"].clone()
            for n, p in model.named_parameters() if "momentum_buffer" in optimizer.state.get(p, {})}


class BatchCounter:
    """Counts ``batch_isend_irecv`` calls (the real function still runs: a spy, not a mock)."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = dist.batch_isend_irecv

        def counted(ops):
            self.calls += 1
            return self.real(ops)

        dist.batch_isend_irecv = counted


def run_variant(ctx, out: Path, name: str, spec: dict, batch_calls: BatchCounter) -> None:
    rounds, options, train = spec["rounds"], spec["options"], spec.get("train")
    config = make_config(seed=11, **options)
    torch.manual_seed(0)
    model = make_model(spec.get("model", "small_cnn"))
    algorithm = build_algorithm(ctx, config)
    algorithm.prepare(model)
    hierarchical = config.algorithm == "hierarchical-crossover"
    key = algorithm.node if hierarchical else ctx.rank  # a node's ranks start identical, as in training
    generator = torch.Generator().manual_seed(1000 + key)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
        for b in model.buffers():
            if b.is_floating_point():
                b.copy_(torch.rand(b.shape, generator=generator) + 0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=train["lr"] if train else 0.0,
                                momentum=train["momentum"] if train else 0.9)
    if spec.get("momentum_init"):
        for p in model.parameters():
            optimizer.state[p]["momentum_buffer"] = torch.randn(p.shape, generator=generator)
    state = {"initial": params(model), "initial_buffers": float_buffers(model),
             "initial_momentum": momenta(model, optimizer), "rounds": rounds}
    deltas, grads, pre_average_buffers, batches_per_round, weights_per_round = [], [], [], [], []
    batches = torch.Generator().manual_seed(5000 + ctx.rank)  # a different batch on every rank
    for _ in range(rounds):
        if train:
            optimizer.zero_grad(set_to_none=True)
            inputs, targets = torch.randn(4, 1, 8, 8, generator=batches), torch.randint(0, 10, (4,), generator=batches)
            nn.functional.cross_entropy(model(inputs), targets).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
            pre_average_buffers.append(float_buffers(model))
        algorithm.before_step(optimizer)
        if train:
            optimizer.step()
        if spec.get("updates"):  # a local change before each round, as an optimizer step would make
            deltas.append({n: torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()})
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.add_(deltas[-1][n])
        calls = batch_calls.calls
        algorithm.after_step(optimizer)
        batches_per_round.append(batch_calls.calls - calls)
        if hasattr(algorithm, "weight"):  # push-sum: this rank's weight after the round
            weights_per_round.append(float(algorithm.weight))
    algorithm.flush()
    state.update({"final": params(model), "final_buffers": float_buffers(model),
                  "final_momentum": momenta(model, optimizer), "segments": [s.names for s in algorithm.segments],
                  "comm": algorithm.comm.as_dict(), "deltas": deltas, "grads": grads,
                  "pre_average_buffers": pre_average_buffers, "metrics": algorithm.metrics(),
                  "batches_per_round": batches_per_round, "weights_per_round": weights_per_round})
    if hierarchical:
        state["inter"] = algorithm.inter_comm.as_dict()
        state["owned_bytes"] = sum(s.nbytes for s, owner in zip(algorithm.segments, algorithm.owner_rank)
                                   if owner == ctx.rank)
        state["layout"] = {"node": algorithm.node, "local_size": algorithm.schedule.local_size,
                           "node_ranks": algorithm.schedule.layout.ranks_of(algorithm.node),
                           "launcher_local_size": ctx.local_size}
    if hasattr(algorithm, "weight"):
        state["weight"] = float(algorithm.weight)
        state["numerators"] = torch.cat([x.reshape(-1) for x in algorithm.numerators])
    (out / name).mkdir(parents=True, exist_ok=True)
    torch.save(state, out / name / f"rank{ctx.rank}.pt")


def main() -> None:
    out, variants = Path(sys.argv[1]), json.loads(sys.argv[2])
    info = detect_launch()
    ctx = init_distributed(info, device=torch.device("cpu"), backend="gloo", timeout_s=120)
    batch_calls = BatchCounter()
    try:
        for name, spec in variants.items():
            local_rank, local_size, node = logical_placement(info, spec["options"].get("gpu_per_node"))
            variant_ctx = replace(ctx, local_rank=local_rank, local_size=local_size, node_id=node)
            run_variant(variant_ctx, out, name, spec, batch_calls)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
