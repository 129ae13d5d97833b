"""CADMM: decentralized consensus ADMM (Shi, Ling, Yuan, Wu, Yin, IEEE TSP 2014) for neural
networks, with inexact primal steps and a penalty schedule as in DiNNO (Yu et al., 2022).

A round is ``--primal-iterations P`` local steps. With ``x_i^k`` the node's model at the start of
round k, ``x_j^k`` its neighbours' (exchanged at the end of the previous round), dual ``alpha_i``
and penalty ``c = rho``, each step of the round is an SGD step on the augmented objective::

    f_i(x) + <alpha_i, x> + c * sum_j ||x - (x_i^k + x_j^k)/2||^2
    x <- x - lr * (g + alpha_i + c * (2*E*x - E*x_i^k - sum_j x_j^k))

At the end of the round the nodes exchange ``x^{k+1}`` with every live neighbour, then
``alpha_i += c * sum_j (x_i^{k+1} - x_j^{k+1})`` and ``c *= rho_scaling``. Every edge exchanges
every round (Shi's update needs all neighbours): the edge slots of ``--round`` do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

from crossover_sgd.algorithms.options import option
from crossover_sgd.algorithms.p2p.base import P2PAlgorithm, P2POptions

__all__ = ["CADMMOptions", "CADMM"]


@dataclass
class CADMMOptions(P2POptions):
    rho_init: float = option(0.1, "cadmm: the initial penalty c", minimum=0.0)
    rho_scaling: float = option(1.0, "cadmm: c is multiplied by this after every round", minimum=0.0)
    primal_iterations: int = option(2, "cadmm: local SGD steps per round", minimum=1)


class CADMM(P2PAlgorithm):
    name = "cadmm"
    options_class = CADMMOptions

    def init_state(self) -> None:
        self.n = sum(p.numel() for p in self.params)
        self.alpha = torch.zeros(self.n, dtype=self.w.dtype, device=self.w.device)
        self.anchor = self.w[: self.n].clone()
        self.rho = self.options.rho_init
        self._constant = torch.empty_like(self.alpha)  # alpha - c*E*x_i^k - c*sum_j x_j^k: fixed in a round
        self._round_start: tuple = (None, None)  # (live neighbours, rho) the constant was made for

    def due_peers(self) -> List[int]:
        last_of_round = (self.step_count + 1) % self.options.primal_iterations == 0
        return list(self.links.edges) if last_of_round else []

    def optimizer_step(self, local_step: Callable[[], None], optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            g, x, live, lr = self.flat_grad(), self.w[: self.n], self.live, self.lr(optimizer)
            edges, c = len(live), self.rho
            if self._round_start != (tuple(live), c):
                self._constant.copy_(self.alpha).add_(self.anchor, alpha=-edges * c)
                self.links.add_to(self._constant, {p: -c for p in live})
                self._round_start = (tuple(live), c)
            # x <- x - lr*(g + alpha + c*(2E x - E x_i^k - sum_j x_j^k)), in place: 3 passes
            x.mul_(1.0 - 2.0 * edges * c * lr).add_(g, alpha=-lr).add_(self._constant, alpha=-lr)

    def absorb(self, fresh: Dict[int, torch.Tensor]) -> None:
        if not self.due_peers() and not fresh:
            return
        x, live = self.w[: self.n], self.live
        if live:
            self.alpha.add_(x, alpha=self.rho * len(live))
            self.links.add_to(self.alpha, {p: -self.rho for p in live})
        self.anchor.copy_(x)
        self.rho *= self.options.rho_scaling
        self._round_start = (None, None)  # the next step rebuilds the round's constant

    def edge_state(self) -> Dict:
        return {**super().edge_state(), "alpha": self.alpha.clone(), "anchor": self.anchor.clone(), "rho": self.rho}

    def load_edge_state(self, state: Dict) -> None:
        super().load_edge_state(state)
        self.alpha.copy_(state["alpha"])
        self.anchor.copy_(state["anchor"])
        self.rho = float(state["rho"])
        self._round_start = (None, None)
