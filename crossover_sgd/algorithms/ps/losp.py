"""LOSP (Wang et al., IEEE JSAC 2021): OSP plus the local compensation ``w = x - gamma * G``, with
G the gradient sum computed while the push travelled (the steps the new global model lacks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from crossover_sgd.algorithms.options import option
from crossover_sgd.algorithms.ps.base import PSAlgorithm, PSOptions
from crossover_sgd.algorithms.ps.records import SCHEDULES

__all__ = ["LOSP", "LOSPOptions"]


@dataclass
class LOSPOptions(PSOptions):
    losp_gamma: Optional[float] = option(None, "losp, dqlosp: the compensation step gamma in w = x - gamma * G "
                                               "(default: --lr)", minimum=0.0)
    losp_gamma_schedule: str = option("constant", "losp, dqlosp: --losp-gamma over training progress",
                                      choices=SCHEDULES)


class LOSP(PSAlgorithm):
    """OSP with the local compensation."""

    name = "losp"
    options_class: ClassVar = LOSPOptions
    overlap = True
    compensate = True
