"""Spectral gap of a schedule, defined as a mean-square contraction per round.

Definition
    Let ``J = 1 1^T / n`` and ``y = (I - J) x`` the disagreement of the stacked
    values. For row-stochastic rounds ``y' = (I - J) W y``. The *mean-square rate*
    ``rho`` is the factor by which ``||y||^2`` shrinks per round in the worst direction
    (``y`` orthogonal to ``1``), and the reported spectral gap is ``1 - rho``:

    * i.i.d. random schedules (crossover, its ablations, hierarchical):
      ``rho = lambda_max(E[W^T (I - J) W])`` on ``1^perp``, so that
      ``E||y_t||^2 <= rho^t ||y_0||^2``. For doubly stochastic ``W`` this is the
      second-largest eigenvalue of ``E[W^T W]``. The expectation is known in
      closed form (see :mod:`topology.crossover`); no matrix is built.
    * deterministic schedules with period ``p`` (the SGP graphs, ring):
      ``rho = lambda_max(Pi^T (I - J) Pi)^(1/p)`` on ``1^perp`` with
      ``Pi = W_{p-1} ... W_1 W_0``: the per-round geometric mean over one period.
      Push-sum matrices here are doubly stochastic (regular graphs), so the same
      number governs ``z = x / w``.

Methods (``method="auto"`` picks the first that applies)
    * ``"closed-form"``: random schedules.
    * ``"fourier"``: circulant graphs (every graph in :mod:`topology.exponential`):
      all rounds share the Fourier eigenvectors, so ``Pi`` has eigenvalues
      ``prod_t lambda_t(f)`` and ``rho = max_{f != 0} |prod_t lambda_t(f)|^(2/p)``;
      exact for any ``n``, no matrix.
    * ``"dense"`` (``n <= DENSE_LIMIT``): ``Pi`` built by applying the rounds to the
      identity, then the top eigenvalue of ``(C Pi C)^T (C Pi C)``, ``C = I - J``.
    * ``"lanczos"``: Lanczos iteration with full reorthogonalisation on the operator
      ``y -> C Pi^T C Pi C y``, applied with the schedule's own maps (never a dense
      matrix). Ritz values approach ``lambda_max`` from below, so this may
      *overstate* the gap when the top of the spectrum is tightly clustered
      (e.g. a ring of thousands of ranks); it stops when the top Ritz value settles.

Examples: crossover ``rho = (n-2) / (2(n-1))`` (gap -> 1/2); exponential graph with
``k = 1`` and ``n = 2^m``: ``Pi = J`` exactly, gap 1; ring: ``rho = cos^2(pi / n)``,
gap ``sin^2(pi / n)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["GapEstimate", "mean_square_rate", "spectral_gap", "lanczos_max_eigenvalue", "GAP_METHODS"]

GAP_METHODS = ("auto", "closed-form", "fourier", "dense", "lanczos")
DENSE_LIMIT = 2048  # largest n for which a dense n x n computation is allowed
DENSE_AUTO_MAX = 512  # "auto" uses dense matrices up to this n (when no exact method applies)
_ROUNDING_FLOOR = 1e-26  # ~ (100 * machine epsilon)^2: a period product this small is exactly J


@dataclass(frozen=True)
class GapEstimate:
    """``rate`` = per-round mean-square contraction, ``gap = 1 - rate``, and how it was obtained."""

    rate: float
    method: str

    @property
    def gap(self) -> float:
        return 1.0 - self.rate


def _center(y: np.ndarray) -> np.ndarray:
    return y - y.mean(axis=0, keepdims=True)


def lanczos_max_eigenvalue(
    op: Callable[[np.ndarray], np.ndarray],
    dim: int,
    max_steps: int = 400,
    tol: float = 1e-12,
    seed: int = 0,
) -> float:
    """Largest eigenvalue of a symmetric operator on ``1^perp`` in ``R^dim`` (Lanczos).

    ``op`` must map vectors orthogonal to ``1`` to vectors orthogonal to ``1``.
    Full reorthogonalisation; stops at an invariant subspace, after ``max_steps``
    (capped at ``dim - 1``), or when the top Ritz value changes by less than
    ``tol`` (relative) over 10 steps.
    """
    m = max(1, min(max_steps, dim - 1))
    v = _center(np.random.default_rng(seed).standard_normal(dim))
    basis = np.zeros((m + 1, dim))
    basis[0] = v / np.linalg.norm(v)
    alphas: list[float] = []
    betas: list[float] = []
    previous = -np.inf

    def top() -> float:
        k = len(alphas)
        tri = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
        return float(np.linalg.eigvalsh(tri)[-1])

    for j in range(m):
        w = op(basis[j])
        alphas.append(float(w @ basis[j]))
        for _ in range(2):  # full reorthogonalisation, twice for stability
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        if beta <= 1e-12 * max(1.0, abs(alphas[-1])) or j == m - 1:
            break
        if (j + 1) % 10 == 0:
            current = top()
            if abs(current - previous) <= tol * max(abs(current), 1e-300):
                break
            previous = current
        betas.append(beta)
        basis[j + 1] = w / beta
    return top()


def _period_product_rate_dense(schedule) -> float:
    prod = np.eye(schedule.n)
    for t in range(schedule.period):
        prod = schedule.apply(prod, t)
    centred = _center(_center(prod).T).T  # C Pi C
    return float(np.linalg.eigvalsh(centred.T @ centred)[-1])


def _period_product_rate_lanczos(schedule) -> float:
    period = schedule.period

    def op(y: np.ndarray) -> np.ndarray:
        z = _center(y)[:, None]
        for t in range(period):
            z = schedule.apply(z, t)
        z = _center(z)
        for t in reversed(range(period)):
            z = schedule.apply_transpose(z, t)
        return _center(z)[:, 0]

    return lanczos_max_eigenvalue(op, schedule.n)


def _period_product_rate_fourier(schedule) -> float:
    prod = np.ones(schedule.n, dtype=complex)
    for t in range(schedule.period):
        prod *= schedule.round_spectrum(t)
    return float(np.max(np.abs(prod[1:])) ** 2)


def mean_square_rate(schedule, method: str = "auto", dense_max: int = DENSE_AUTO_MAX) -> GapEstimate:
    """Per-round mean-square contraction ``rho`` of ``schedule`` (see the module doc).

    ``method``: one of :data:`GAP_METHODS`; ``"auto"`` uses the closed form for random
    schedules, Fourier for circulant graphs, dense for ``n <= dense_max``, else Lanczos.
    """
    if method not in GAP_METHODS:
        raise ValueError(f"unknown gap method {method!r}: choose from {', '.join(GAP_METHODS)}")
    random = schedule.period is None
    if method == "auto":
        if random:
            method = "closed-form"
        elif hasattr(schedule, "round_spectrum"):
            method = "fourier"
        else:
            method = "dense" if schedule.n <= dense_max else "lanczos"
    if random != (method == "closed-form"):
        raise ValueError(
            f"method {method!r} does not apply to {'random' if random else 'periodic'} schedules"
        )
    if random:
        return GapEstimate(float(schedule.mean_square_rate()), method)
    if schedule.num_segments != 1:
        raise ValueError("periodic schedules must have a single segment")
    if schedule.n == 1:
        return GapEstimate(0.0, method)
    if method == "fourier":
        if not hasattr(schedule, "round_spectrum"):
            raise ValueError("the fourier method needs a circulant schedule (round_spectrum)")
        rho_period = _period_product_rate_fourier(schedule)
    elif method == "dense":
        if schedule.n > DENSE_LIMIT:
            raise ValueError(f"n={schedule.n} is too large for dense matrices (limit {DENSE_LIMIT})")
        rho_period = _period_product_rate_dense(schedule)
    else:
        rho_period = _period_product_rate_lanczos(schedule)
    # products below the squared rounding error are exact consensus (Pi = J), not a rate
    rho_period = 0.0 if rho_period < _ROUNDING_FLOOR else min(rho_period, 1.0)
    return GapEstimate(rho_period ** (1.0 / schedule.period), method)


def spectral_gap(schedule, method: str = "auto") -> float:
    """``1 - mean_square_rate(schedule, method).rate``."""
    return mean_square_rate(schedule, method).gap
