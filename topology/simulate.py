"""Consensus simulator: apply a schedule's rounds to ``N`` virtual replicas.

The replicas are the rows of an ``(N, d)`` array; each round calls the schedule's
``apply`` (peer maps applied with NumPy fancy indexing / rolls, never a dense
``N x N`` matrix), so thousands of replicas take milliseconds per round. A
multi-segment schedule mixes column block ``s`` with segment ``s``'s map
(:func:`topology.mixing.segment_slices`).

Push-sum schedules carry numerators ``x`` and weights ``w`` (default ``w = 1``)
through the same column-stochastic round; the replicas are ``z = x / w``.

Reported per round ``t`` (``v_t`` = replicas, ``D_0 = sum_i ||v_{0,i} - mean(v_0)||^2``):
    * ``errors[t] = sum_i ||v_{t,i} - mean(v_t)||^2 / D_0`` — consensus error
      (relative mean squared distance to the replicas' average; ``errors[0] = 1``);
    * ``drift[t] = N ||mean(v_t) - target||^2 / D_0`` — how far the average moved
      from the value exact averaging must reach (``target`` = initial mean, or
      ``sum x_0 / sum w_0`` for push-sum). ``errors + drift`` is the relative mean
      squared distance to ``target``. Zero for load-balanced crossover and
      regular push-sum graphs, non-zero for "no fairness".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["SimulationResult", "simulate", "random_initial_values", "simulation_bytes", "available_memory", "check_memory"]


@dataclass(frozen=True)
class SimulationResult:
    errors: np.ndarray  # (rounds + 1,)
    drift: np.ndarray  # (rounds + 1,)
    final: np.ndarray  # (N, d) replicas after the last round (z = x / w for push-sum)
    weights: np.ndarray | None  # (N,) push-sum weights after the last round, else None
    start_round: int

    @property
    def rounds(self) -> int:
        return int(self.errors.size - 1)

    def empirical_rate(self) -> float:
        """Geometric-mean contraction per round of the consensus error (0 if it reached 0)."""
        if self.rounds == 0:
            return float("nan")
        last = float(self.errors[-1])
        if last <= 0.0:
            return 0.0
        return (last / float(self.errors[0])) ** (1.0 / self.rounds)


def simulation_bytes(n: int, dim: int, segments: int = 1) -> int:
    """A generous estimate of the memory a simulation of ``n`` replicas of ``dim`` values takes:
    the replicas and about five arrays like them (copies, the mean's difference, a round's result),
    and the schedule's per-segment peer maps and their sampling."""
    return 8 * n * (6 * dim + 4 * max(segments, 1) + 8)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(n: int, dim: int, segments: int = 1) -> None:
    """Raise MemoryError with one sentence when the simulation would not fit in the available memory
    (checked before anything is allocated)."""
    need, have = simulation_bytes(n, dim, segments), available_memory()
    if have is not None and need > have:
        raise MemoryError(f"simulating {n} replicas x {dim} values needs about {need / 2**30:.1f} GiB of memory, "
                          f"but {have / 2**30:.1f} GiB is available: use a smaller N (at most about "
                          f"{int(n * have / need)}) or a smaller --dim")


def random_initial_values(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``(n, dim)`` standard-normal replicas (reproducible from ``seed``)."""
    return np.random.default_rng(seed).standard_normal((n, dim))


def _disagreement(v: np.ndarray) -> tuple[float, np.ndarray]:
    mean = v.mean(axis=0)
    return float(np.sum((v - mean) ** 2)), mean


def simulate(
    schedule,
    x0: np.ndarray,
    rounds: int,
    start_round: int = 0,
    w0: np.ndarray | None = None,
) -> SimulationResult:
    """Run rounds ``start_round .. start_round + rounds - 1`` of ``schedule`` on ``x0`` ``(N, d)``."""
    x = np.array(x0, dtype=float, copy=True)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != schedule.n:
        raise ValueError(f"x0 must have shape (n={schedule.n}, d), got {np.shape(x0)}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    push_sum = bool(schedule.push_sum)
    if w0 is not None and not push_sum:
        raise ValueError("w0 (push-sum weights) only applies to push-sum schedules")
    w = None
    if push_sum:
        w = np.ones(schedule.n) if w0 is None else np.array(w0, dtype=float, copy=True)
        if w.shape != (schedule.n,) or np.any(w <= 0):
            raise ValueError(f"w0 must be {schedule.n} positive weights")
        target = x.sum(axis=0) / w.sum()
        values = x / w[:, None]
    else:
        target = x.mean(axis=0)
        values = x
    d0, mean = _disagreement(values)
    norm = d0 if d0 > 0 else 1.0
    n = schedule.n
    errors = np.empty(rounds + 1)
    drift = np.empty(rounds + 1)
    errors[0] = d0 / norm
    drift[0] = n * float(np.sum((mean - target) ** 2)) / norm
    for i in range(rounds):
        t = start_round + i
        x = schedule.apply(x, t)
        if push_sum:
            w = schedule.apply(w[:, None], t)[:, 0]
            values = x / w[:, None]
        else:
            values = x
        dist, mean = _disagreement(values)
        errors[i + 1] = dist / norm
        drift[i + 1] = n * float(np.sum((mean - target) ** 2)) / norm
    return SimulationResult(errors, drift, values, w, start_round)
