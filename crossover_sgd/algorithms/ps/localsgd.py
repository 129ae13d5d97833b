"""localSGD: K local steps, push the sum of their gradients, wait for the new global model."""

from __future__ import annotations

from crossover_sgd.algorithms.ps.base import PSAlgorithm

__all__ = ["LocalSGD"]


class LocalSGD(PSAlgorithm):
    """Blocking rounds of exactly ``--local-steps`` steps (the segment's last may be shorter)."""

    name = "localsgd"
    overlap = False
