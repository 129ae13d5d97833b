"""OSP (Wang et al., ICPP 2019): the worker keeps computing, up to K steps, while its push and the
pull of the new global model travel; it then takes the global model as is."""

from __future__ import annotations

from crossover_sgd.algorithms.ps.base import PSAlgorithm

__all__ = ["OSP"]


class OSP(PSAlgorithm):
    """Overlapped rounds; a round's k is the number of steps done while communication ran."""

    name = "osp"
    overlap = True
