"""Per-edge dual variables, shared by PDMM and ADMM (Edge-Consensus Learning, Niwa et al.).

Node ``i`` keeps, for each neighbour ``j``, a dual ``z_{i|j}`` (one flat vector the size of the
parameters; all of them rows of one matrix). At an exchange it sends ``y_{i|j} = z_{i|j} - 2
A_{i|j} w_i`` and, when ``y_{j|i}`` arrives:

* PDMM (Peaceman-Rachford): ``z_{i|j} = y_{j|i}``;
* ADMM (Douglas-Rachford, the averaged operator): ``z_{i|j} = (z_{i|j} + y_{j|i}) / 2``.

This is what the algorithm's *name* means, whatever ``--piw``: ``piw`` only weighs the step
(``eta``). (The original averaged the duals only when ``piw == 2``, so AdmmISVR with ``piw 1``
silently computed PdmmISVR.) With ``A_{i|j} = -A_{j|i}``, a fixed point has ``z_{i|j} - z_{j|i} =
2 A_{i|j} w`` on every edge, so ``A_{i|j} z_{i|j} + A_{j|i} z_{j|i} = 2 w``: summed over the
nodes, the dual terms (``2 |edges| w``) cancel the ``E_i * eta * w`` of the primal steps and the
nodes' gradients sum to zero at consensus (the centralized optimum).

Only duals travel (PDMM-SGD/ADMM-SGD also send the model, for their ``rho`` term). Every node
starts from the same model ``w_0`` (the initial broadcast) and its duals at the consensus fixed
point of that model, ``z_{i|j} = A_{i|j} w_0`` (with ``z = 0`` the first step would pull every
model towards 0: ``sum_j A_{i|j} z_{i|j}`` is the target the dual term pulls to).
"""

from __future__ import annotations

from typing import Callable, ClassVar, Dict

import torch

from crossover_sgd.algorithms.p2p.base import P2PAlgorithm

__all__ = ["PrimalDualAlgorithm"]


class PrimalDualAlgorithm(P2PAlgorithm):
    """Duals per edge and the local primal update in place of the optimizer's step."""

    #: True: ADMM's averaged dual update; False: PDMM's.
    averaged_duals: ClassVar[bool] = False
    #: Whether messages carry the model after the dual (PDMM-SGD's rho term).
    sends_model: ClassVar[bool] = False

    def init_state(self) -> None:
        self.n = sum(p.numel() for p in self.params)
        peers = self.nodes.neighbours(self.me)
        self.z_row = {p: k for k, p in enumerate(peers)}
        self.signs = torch.tensor([float(self.sign(p)) for p in peers], dtype=self.w.dtype, device=self.w.device)
        # the consensus fixed point of the common initial model: z_{i|j} = A_{i|j} w_0
        self.z = self.signs[:, None] * self.w[: self.n][None, :]
        # one outgoing message per neighbour (those of one exchange travel at the same time)
        self._messages = torch.empty(len(peers), 2 * self.n if self.sends_model else self.n, dtype=self.w.dtype,
                                     device=self.w.device)

    def initial_message(self, peer: int) -> torch.Tensor:
        """``y_{j|i} = z_{j|i} - 2 A_{j|i} w_0 = A_{i|j} w_0`` (and the common model)."""
        first = torch.empty_like(self._messages[0])
        first[: self.n] = self.z[self.z_row[peer]]
        if self.sends_model:
            first[self.n:] = self.w[: self.n]
        return first

    def outgoing(self, peer: int) -> torch.Tensor:
        k = self.z_row[peer]
        message = self._messages[k]
        torch.add(self.z[k], self.w[: self.n], alpha=-2.0 * float(self.signs[k]), out=message[: self.n])
        if self.sends_model:
            message[self.n:] = self.w[: self.n]
        return message

    def absorb(self, fresh: Dict[int, torch.Tensor]) -> None:
        for peer in fresh:
            z = self.z[self.z_row[peer]]
            y = self.peer_value(peer)[: self.n]
            if self.averaged_duals:
                z.add_(y).mul_(0.5)
            else:
                z.copy_(y)

    def add_duals(self, out: torch.Tensor, scale: float) -> torch.Tensor:
        """``out += scale * sum over live j of A_{i|j} z_{i|j}``, in place (one pass per edge)."""
        for peer in self.live:
            out.add_(self.z[self.z_row[peer]], alpha=scale * self.sign(peer))
        return out

    def optimizer_step(self, local_step: Callable[[], None], optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            self.primal_update(self.flat_grad(), self.lr(optimizer), len(self.live))

    def primal_update(self, g: torch.Tensor, lr: float, edges: int) -> None:
        raise NotImplementedError

    def edge_state(self) -> Dict:
        return {**super().edge_state(), "z": self.z.clone()}

    def load_edge_state(self, state: Dict) -> None:
        super().load_edge_state(state)
        self.z.copy_(state["z"])

