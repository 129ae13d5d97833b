"""Spectral gap of a schedule, defined as a mean-square contraction per round.

Definition
    Let ``J = 1 1^T / n`` and ``y = (I - J) x`` the disagreement of the stacked
    values. For row-stochastic rounds ``y' = (I - J) W y``. The *mean-square rate*
    ``rho`` is the factor by which ``||y||^2`` shrinks per round in the worst direction
    (``y`` orthogonal to ``1``), and the reported spectral gap is ``1 - rho``:

    * i.i.d. random schedules (crossover, its ablations, hierarchical):
      ``rho = lambda_max(E[W^T (I - J) W])`` on ``1^perp``, so that
      ``E||y_t||^2 <= rho^t ||y_0||^2``. For doubly stochastic ``W`` this is
      ``1 - |lambda_2|`` of ``E[W^T W]``. The expectation is known in closed form
      (see :mod:`topology.crossover`); no matrix is built.
    * deterministic schedules with period ``p`` (the SGP graphs, ring):
      ``rho = lambda_max(Pi^T (I - J) Pi)^(1/p)`` on ``1^perp`` with
      ``Pi = W_{p-1} ... W_1 W_0`` (the per-round geometric mean over one period;
      the graphs here are circulant, so their rounds commute and the start round
      does not matter). For ``n <= dense_max`` it is computed from dense matrices
      (``Pi`` is built by applying the rounds to the identity); above, by Lanczos
      iteration (full reorthogonalisation) on the operator
      ``y -> C Pi^T C Pi C y`` (``C = I - J``) applied with the schedule's own maps.
      Push-sum matrices here are doubly stochastic (regular graphs), so the same
      formula governs ``z = x / w``.

    Examples: crossover ``rho = (n-2) / (2(n-1))`` (gap -> 1/2); exponential
    graph with ``k = 1`` and ``n = 2^m``: ``Pi = J`` exactly, gap 1; ring:
    ``rho = cos^2(pi / n)``, gap ``sin^2(pi / n)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["GapEstimate", "mean_square_rate", "spectral_gap", "lanczos_max_eigenvalue"]

DENSE_MAX = 512


@dataclass(frozen=True)
class GapEstimate:
    """``rate`` = per-round mean-square contraction, ``gap = 1 - rate``, and how it was obtained."""

    rate: float
    method: str  # "closed form", "dense" or "lanczos"

    @property
    def gap(self) -> float:
        return 1.0 - self.rate


def _center(y: np.ndarray) -> np.ndarray:
    return y - y.mean(axis=0, keepdims=True)


def lanczos_max_eigenvalue(
    op: Callable[[np.ndarray], np.ndarray], dim: int, steps: int = 100, seed: int = 0
) -> float:
    """Largest eigenvalue of a symmetric operator on ``1^perp`` in ``R^dim`` by Lanczos.

    ``op`` must map vectors orthogonal to ``1`` to vectors orthogonal to ``1``.
    Full reorthogonalisation; ``steps`` is capped at ``dim - 1``.
    """
    m = max(1, min(steps, dim - 1))
    v = _center(np.random.default_rng(seed).standard_normal(dim))
    basis = np.zeros((m + 1, dim))
    basis[0] = v / np.linalg.norm(v)
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(m):
        w = op(basis[j])
        alphas.append(float(w @ basis[j]))
        for _ in range(2):  # full reorthogonalisation, twice for stability
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        if beta <= 1e-12 * max(1.0, abs(alphas[-1])) or j == m - 1:
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    k = len(alphas)
    tri = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    return float(np.linalg.eigvalsh(tri)[-1])


def mean_square_rate(schedule, dense_max: int = DENSE_MAX, lanczos_steps: int = 100) -> GapEstimate:
    """Per-round mean-square contraction ``rho`` of ``schedule`` (module doc)."""
    if schedule.period is None:
        return GapEstimate(float(schedule.mean_square_rate()), "closed form")
    if schedule.num_segments != 1:
        raise ValueError("periodic schedules must have a single segment")
    n, period = schedule.n, schedule.period
    if n == 1:
        return GapEstimate(0.0, "dense")
    if n <= dense_max:
        prod = np.eye(n)
        for t in range(period):
            prod = schedule.apply(prod, t)
        centred = _center(_center(prod).T).T  # C Pi C
        rho_period = float(np.linalg.eigvalsh(centred.T @ centred)[-1])
        method = "dense"
    else:

        def op(y: np.ndarray) -> np.ndarray:
            z = _center(y)[:, None]
            for t in range(period):
                z = schedule.apply(z, t)
            z = _center(z)
            for t in reversed(range(period)):
                z = schedule.apply_transpose(z, t)
            return _center(z)[:, 0]

        rho_period = lanczos_max_eigenvalue(op, n, lanczos_steps)
        method = "lanczos"
    rho_period = min(max(rho_period, 0.0), 1.0)
    return GapEstimate(rho_period ** (1.0 / period), method)


def spectral_gap(schedule, dense_max: int = DENSE_MAX) -> float:
    """``1 - mean_square_rate(schedule).rate``."""
    return mean_square_rate(schedule, dense_max=dense_max).gap
