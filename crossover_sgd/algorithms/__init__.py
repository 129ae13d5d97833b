"""Communication algorithms, one module each (a family: one package), all behind :class:`Algorithm`.

:mod:`crossover_sgd.algorithms.registry` lists them: add a module and one line there to add an
algorithm (its options, flags, checks and metric columns come with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from crossover_sgd.algorithms.base import Algorithm, RoleEnv
from crossover_sgd.algorithms.registry import ALGORITHMS, make_config
from crossover_sgd.config import TrainConfig
from crossover_sgd.runtime.process_group import DistContext

__all__ = ["Algorithm", "ALGORITHMS", "RoleEnv", "build_algorithm", "make_config"]


def build_algorithm(ctx: DistContext, config: TrainConfig, out: Optional[Path] = None) -> Algorithm:
    """The algorithm ``config.algorithm`` names (the config is validated already), writing its
    own records (if any) under ``out``."""
    return ALGORITHMS[config.algorithm](ctx, config, out)
