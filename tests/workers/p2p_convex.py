"""One node of tests/algorithms/p2p/test_p2p_convex.py: L2-regularised multinomial logistic
regression on scikit-learn's digits split non-IID over the nodes (node k holds the classes with
label % n == k, plus a tenth of every other class), full-batch gradients in float64, through the
algorithm's real hooks over real Gloo links. Saves each algorithm's final parameters to
OUT/<algorithm>/rank{R}.pt.

Usage: p2p_convex.py OUT STEPS ALGORITHM:KEY=VALUE,... [...] (``steps=N`` among an algorithm's
options: N steps for that one instead of STEPS)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

L2 = 0.01


def node_data(node: int, nodes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Node ``node``'s full batch (features standardised, float64)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-8)
    y = digits.target
    rng = np.random.default_rng(7)
    owner = np.where(rng.random(len(y)) < 0.9, y % nodes, rng.integers(0, nodes, len(y)))
    mine = owner == node
    return torch.tensor(x[mine], dtype=torch.float64), torch.tensor(y[mine], dtype=torch.long)


def local_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f_i: the node's mean cross-entropy plus L2/2 ||w||^2."""
    penalty = sum((p * p).sum() for p in model.parameters())
    return nn.functional.cross_entropy(model(x), y) + 0.5 * L2 * penalty


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def main(out: Path, steps: int, specs) -> None:
    from crossover_sgd.algorithms import build_algorithm, make_config
    from crossover_sgd.runtime.launch import detect_launch
    from crossover_sgd.runtime.process_group import init_distributed, shutdown

    info = detect_launch()
    ctx = init_distributed(info, device=torch.device("cpu"), backend="gloo", timeout_s=120)
    x, y = node_data(ctx.rank, ctx.world_size)
    for spec in specs:
        name, _, rest = spec.partition(":")
        options: Dict[str, object] = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        options = {k: _value(v) for k, v in options.items()}
        its_steps = int(options.pop("steps", steps))
        algorithm_name = options.pop("algorithm", name)
        config = make_config(algorithm=algorithm_name, dtype="float64", timeout=120.0, **options)
        torch.manual_seed(0)
        model = nn.Linear(64, 10).double()
        algorithm = build_algorithm(ctx, config)
        algorithm.prepare(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
        for _ in range(its_steps):
            optimizer.zero_grad()
            local_loss(model, x, y).backward()
            algorithm.before_step(optimizer)
            algorithm.optimizer_step(optimizer.step, optimizer)
            algorithm.after_step(optimizer)
        (out / name).mkdir(parents=True, exist_ok=True)
        torch.save([p.detach().clone() for p in model.parameters()], out / name / f"rank{ctx.rank}.pt")
        algorithm.finish("finished")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
