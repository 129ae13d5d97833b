"""Gossip SGD: after the local SGD step, pairwise averaging with every neighbour whose slot
comes up, in rank order: ``w = (w + w_j) / 2`` with ``w_j`` the neighbour's last copy, and the
neighbour is sent the model as it stands after averaging with it.

(The original kept only the last edge's average: each edge's average started from the model
before any averaging. Here every due edge contributes, one after the other.)
"""

from __future__ import annotations

from typing import Dict, List

import torch

from crossover_sgd.algorithms.p2p.base import P2PAlgorithm

__all__ = ["GossipSGD"]


class GossipSGD(P2PAlgorithm):
    name = "gossip-sgd"
    with_buffers = True

    def init_state(self) -> None:
        self.sent: Dict[int, torch.Tensor] = {}

    def mix(self, due: List[int]) -> None:
        for peer in due:
            self.w.add_(self.peer_value(peer)).mul_(0.5)
            self.sent[peer] = self.w.clone()

    def outgoing(self, peer: int) -> torch.Tensor:
        return self.sent.pop(peer)
