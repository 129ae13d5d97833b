"""D-SGD: a local SGD step, then ``w = (w + sum of the neighbours' last copies) / (E + 1)``.

As in the original: the average uses the copies received at the last exchange of each edge
(every live neighbour's, whichever edges exchange now); then the averaged model is sent to the
neighbours whose slot comes up. Parameters and floating buffers (BatchNorm statistics) travel.
"""

from __future__ import annotations

from typing import List

from crossover_sgd.algorithms.p2p.base import P2PAlgorithm

__all__ = ["DSGD"]


class DSGD(P2PAlgorithm):
    name = "dsgd"
    with_buffers = True

    def mix(self, due: List[int]) -> None:
        live = self.live
        if live:
            self.links.add_to(self.w, {p: 1.0 for p in live}).mul_(1.0 / (len(live) + 1))
