"""PDMM-ISVR and ADMM-ISVR (Niwa et al., ICML 2021: implicit stochastic variance reduction).

Per step, with ``E`` live neighbours, ``K`` steps per round and the duals of
:mod:`~crossover_sgd.algorithms.p2p.primal_dual`::

    eta = piw / (lr * (K*E + K - piw*E))
    gc  = 1 - lr*eta*E*(K/piw - 1)   if --use_gcoef, else 1
    w   = (w/lr - gc*g + eta * sum_j A_{i|j} z_{i|j}) / (1/lr + E*eta)

``piw`` (0.5, 1 or 2) weighs the step for both methods; PDMM or ADMM is the dual update (the
name). ``eta`` must be positive for every E the node can have: ``K*E + K - piw*E = K + E*(K - piw)
> 0`` for all E needs ``K >= piw``, so ``--piw 2`` needs ``--round 2`` or more (the original
divided by zero with ``K = 1`` and one neighbour: "PDMM-ISVR with piw 2 crashed").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from crossover_sgd.algorithms.options import option
from crossover_sgd.algorithms.p2p.base import P2POptions
from crossover_sgd.algorithms.p2p.primal_dual import PrimalDualAlgorithm
from crossover_sgd.errors import ConfigError

__all__ = ["ISVROptions", "PdmmISVR", "AdmmISVR", "isvr_coefficients"]

PIW_VALUES = (0.5, 1.0, 2.0)


@dataclass
class ISVROptions(P2POptions):
    piw: float = option(1.0, "pdmm-isvr, admm-isvr: the step weight (0.5, 1 or 2)")
    use_gcoef: bool = option(False, "pdmm-isvr, admm-isvr: scale the gradient by gc = 1 - lr*eta*E*(K/piw - 1)",
                             metavar="BOOL")

    def check(self, world_size: Optional[int]) -> None:
        if self.piw not in PIW_VALUES:
            raise ConfigError(f"{{piw}} {self.piw:g} is invalid: use 0.5, 1 or 2")
        super().check(world_size)
        if self.node_list is None and self.round < self.piw:
            raise ConfigError(f"{{piw}} {self.piw:g} needs {{round}} >= {self.piw:g} (eta = piw / (lr * (K*E + K - "
                              f"piw*E)) must stay positive); {{round}} is {self.round}")


def isvr_coefficients(lr: float, piw: float, rounds: int, edges: int, use_gcoef: bool) -> tuple:
    """(eta, gc) of one step."""
    eta = piw / (lr * (rounds * edges + rounds - piw * edges))
    gc = 1.0 - lr * eta * edges * (rounds / piw - 1.0) if use_gcoef else 1.0
    return eta, gc


class PdmmISVR(PrimalDualAlgorithm):
    name = "pdmm-isvr"
    options_class = ISVROptions

    def prepare(self, model):
        model = super().prepare(model)
        if self.nodes.round < self.options.piw:
            raise ConfigError(f"{{piw}} {self.options.piw:g} needs a round of at least {self.options.piw:g} steps "
                              f"(eta must stay positive); the graph's round is {self.nodes.round}")
        return model

    def primal_update(self, g: torch.Tensor, lr: float, edges: int) -> None:
        eta, gc = isvr_coefficients(lr, self.options.piw, self.nodes.round, edges, self.options.use_gcoef)
        w, denominator = self.w[: self.n], 1.0 / lr + edges * eta
        # w = (w/lr - gc*g + eta * sum_j A z_j) / denominator, in place: 2 + E passes
        w.mul_(1.0 / (lr * denominator)).add_(g, alpha=-gc / denominator)
        self.add_duals(w, eta / denominator)


class AdmmISVR(PdmmISVR):
    name = "admm-isvr"
    averaged_duals = True
