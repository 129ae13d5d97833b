"""Shared fixtures for the LARS tests: a small CNN, identical random gradients, a schedule."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn


def _small_cnn(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """Conv (with bias) + BatchNorm + conv (no bias) + linear: 4-D, 2-D and 1-D parameters."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    return model.to(dtype)


def _set_random_grads(models: list[nn.Module], generator: torch.Generator, scale: float) -> None:
    """Give corresponding parameters of ``models`` the same random gradient."""
    for params in zip(*(m.parameters() for m in models)):
        grad = torch.randn(params[0].shape, generator=generator, dtype=torch.float64) * scale
        for p in params:
            p.grad = grad.to(p.dtype).clone()


def _lr_at(step: int, base: float = 0.2) -> float:
    """Linear warm-up over 10 steps, then polynomial decay: lr changes at every step."""
    return base * min(1.0, (step + 1) / 10) * (1.0 - step / 60) ** 2


@pytest.fixture
def make_cnn() -> Callable[..., nn.Module]:
    return _small_cnn


@pytest.fixture
def set_random_grads() -> Callable[[list[nn.Module], torch.Generator, float], None]:
    return _set_random_grads


@pytest.fixture
def lr_at() -> Callable[[int], float]:
    return _lr_at


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max((pa.double() - pb.double()).abs().max().item()
               for pa, pb in zip(a.parameters(), b.parameters()))


@pytest.fixture
def param_diff() -> Callable[[nn.Module, nn.Module], float]:
    return max_param_diff
