"""PDMM-SGD and ADMM-SGD (Edge-Consensus Learning, Niwa et al., KDD 2020).

Per parameter tensor, with scale ``s = sqrt(fan-in)`` (``prod(shape[1:])`` for weights of two or
more dimensions, 1 for vectors: biases and normalisation weights), ``mu = 1/lr``, ``E`` live
neighbours, their duals ``z_{i|j}`` and last models ``w_j``::

    w = (mu*w - g + (s*eta/E) * sum_j A_{i|j} z_{i|j} + (s*rho/E) * sum_j w_j) / (mu + s*eta + s*rho)

Messages carry the dual and the model. At consensus the ``rho`` term vanishes; the dual term
weighs node ``i``'s gradient by ``E_i / (s*eta)``: on a regular graph the fixed point is the
centralized optimum, on an irregular one the optimum of ``sum_i E_i f_i`` (pinned by the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crossover_sgd.algorithms.options import option
from crossover_sgd.algorithms.p2p.base import P2POptions
from crossover_sgd.algorithms.p2p.primal_dual import PrimalDualAlgorithm

__all__ = ["PdmmSGDOptions", "PdmmSGD", "AdmmSGD", "fan_in_scale"]


@dataclass
class PdmmSGDOptions(P2POptions):
    eta: float = option(1.0, "pdmm-sgd, admm-sgd: weight of the dual term", minimum=0.0)
    rho: float = option(0.1, "pdmm-sgd, admm-sgd: weight of the neighbours' models", minimum=0.0)


def fan_in_scale(params, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One flat vector: ``sqrt(fan-in)`` of each element's tensor."""
    parts = [torch.full((p.numel(),), math.sqrt(math.prod(p.shape[1:]) if p.dim() >= 2 else 1.0),
                        dtype=dtype, device=device) for p in params]
    return torch.cat(parts)


class PdmmSGD(PrimalDualAlgorithm):
    name = "pdmm-sgd"
    options_class = PdmmSGDOptions
    sends_model = True

    def init_state(self) -> None:
        super().init_state()
        self.scale = fan_in_scale(self.params, self.w.dtype, self.w.device)
        self._terms = torch.empty_like(self.scale)
        self._inverse: tuple = (None, None)  # (lr, 1 / (mu + s*(eta + rho)))

    def primal_update(self, g: torch.Tensor, lr: float, edges: int) -> None:
        w, mu = self.w[: self.n], 1.0 / lr
        if not edges:
            w.add_(g, alpha=-lr)
            return
        eta, rho = self.options.eta, self.options.rho
        if self._inverse[0] != lr:  # the schedule moved: 1 / (mu + s*(eta + rho)) anew
            self._inverse = (lr, torch.reciprocal(self.scale * (eta + rho) + mu))
        terms = self._terms.zero_()  # (eta/E) sum_j A z_j + (rho/E) sum_j w_j, then times s
        self.add_duals(terms, eta / edges)
        self.links.add_to(terms, {p: rho / edges for p in self.live}, slice(self.n, 2 * self.n))
        terms.mul_(self.scale).add_(w, alpha=mu).sub_(g)
        torch.mul(terms, self._inverse[1], out=w)


class AdmmSGD(PdmmSGD):
    name = "admm-sgd"
    averaged_duals = True
