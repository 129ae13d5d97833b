"""Communication algorithms, one module each, all behind :class:`Algorithm`.

``ALGORITHMS`` maps each ``--algorithm`` name to its class; add a module and one line here to add
an algorithm.
"""

from __future__ import annotations

from typing import Dict, Type

from crossover_sgd.algorithms.allreduce import AllReduceSGD
from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.algorithms.crossover import CrossoverSGD
from crossover_sgd.algorithms.hierarchical import HierarchicalCrossoverSGD
from crossover_sgd.algorithms.sgp import SGP
from crossover_sgd.config import TrainConfig
from crossover_sgd.runtime.process_group import DistContext

__all__ = ["Algorithm", "ALGORITHMS", "build_algorithm"]

ALGORITHMS: Dict[str, Type[Algorithm]] = {
    cls.name: cls for cls in (AllReduceSGD, SGP, CrossoverSGD, HierarchicalCrossoverSGD)
}


def build_algorithm(ctx: DistContext, config: TrainConfig) -> Algorithm:
    """The algorithm ``config.algorithm`` names (the config is validated already)."""
    return ALGORITHMS[config.algorithm](ctx, config)
