"""SGP, stochastic gradient push (Assran et al., ICML 2019): push-sum gossip on a time-varying
directed exponential graph.

Each rank keeps a numerator ``x`` (all mixed tensors) and a scalar weight ``w``, and trains on the
de-biased ``z = x / w`` (what the model's parameters hold). Per step::

    x <- x + (z_after_step - z_before_step)          # the local SGD update, applied to x
    send (x / (k+1), w / (k+1)) to each of the k out-peers of round t
    x <- x / (k+1) + sum of received x ;  w <- w / (k+1) + sum of received w
    z <- x / w

The graph is SGP's multi-peer time-varying exponential graph (:class:`topology.NPeerExponentialGraph`,
the SGP code's ``NPeerDynamicDirectedExponentialGraph``): with ``b = k + 1`` (``--sgp-peers k``),
round ``t`` sends to the ranks ``j * b^i`` ahead, ``j = 1..k``, the exponent ``i`` cycling over the
powers ``b^i <= n - 1`` (``k = 1``: distances ``1, 2, 4, ...``, one per round; ``k = 2``: ``1, 2``
then ``3, 6`` then ``9, 18``, ..., the Crossover study's SGP baseline). Offsets that coincide modulo
``n`` or hit the rank itself are dropped from the rotation, where the SGP code kept them by
mistake (the module doc of :mod:`topology.exponential`). ``k`` may be 1 to ``n - 1``. The mixing
matrix is column stochastic: ``sum(w) = n`` and ``sum(x)`` are
conserved by every round. On these regular graphs ``w`` stays 1 and push-sum reduces to plain
averaging; the weights are kept anyway, as the algorithm defines them. The weight always travels
in float64; with a half-precision ``--gossip-dtype`` the conservation of ``sum(x)`` holds only to
that precision.

**Overlap** (``--gossip-overlap True``, alias ``--sgp-overlap``; OSGP): the round's messages are posted and the step returns at
once; they travel while the next forward/backward computes and are added one step late. The
shares kept and sent are split at posting time, so ``sum(x)`` and ``sum(w)`` (counting messages
in flight) are still conserved; ``w`` dips below 1 while mass is in flight and ``z = x / w``
corrects for it. ``flush()`` (before evaluation and checkpoints) receives what is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from crossover_sgd.algorithms.gossip.base import MAX_DTYPES, GossipAlgorithm, GossipOptions, OverlapOptions, SegmentRound
from crossover_sgd.algorithms.options import option
from crossover_sgd.comm.p2p import Message, Pending
from crossover_sgd.errors import ConfigError
from topology import NPeerExponentialGraph

__all__ = ["SGP", "SGPOptions"]

_WEIGHT_TAG = MAX_DTYPES - 1


@dataclass
class SGPOptions(GossipOptions, OverlapOptions):
    sgp_peers: int = option(1, "sgp: out-peers per round", minimum=1)

    def check(self, world_size: Optional[int]) -> None:
        super().check(world_size)
        if world_size is not None:
            check_peers(self.sgp_peers, world_size)


def check_peers(k: int, n: int) -> None:
    """``--sgp-peers k`` on ``n`` ranks: the multi-peer graph offers ``n - 1`` distinct peers
    (``k = n - 1``: all of them every round); one rank has no peer and ignores ``k``."""
    if n > 1 and not 1 <= k <= n - 1:
        raise ConfigError(f"{{sgp_peers}} {k} is invalid for {n} ranks: SGP sends to k of the other ranks per "
                          f"round (offsets j*(k+1)^i), so use 1 to {n - 1}")


class SGP(GossipAlgorithm):
    name = "sgp"
    options_class = SGPOptions

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().prepare(model)
        n, k = self.ctx.world_size, self.options.sgp_peers
        self.graph: Optional[NPeerExponentialGraph] = None
        check_peers(k, n)
        if n > 1:
            self.graph = NPeerExponentialGraph(n, k=k)
        self.weight = torch.ones((), dtype=torch.float64, device=self.ctx.device)
        self.numerators: List[torch.Tensor] = []
        self.in_flight: Optional[Tuple[Pending, List[Tuple[List[torch.Tensor], torch.Tensor]]]] = None
        self._weight_buffers: Dict[str, torch.Tensor] = {}
        return model

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.ensure_flats(optimizer)
        (flat,) = self.flats
        z = flat.pack()
        if not self.numerators:  # w is 1 before the first round, so x = z exactly
            self.numerators = [buf.clone() for buf in z]
        else:
            for x, z_now in zip(self.numerators, z):  # x + (z - x / w), in place
                x.mul_(1 - 1 / self.weight.to(x.dtype)).add_(z_now)
        if self.graph is not None:
            self._receive_in_flight()
            self._post_round()
            if not self.options.gossip_overlap:
                self._receive_in_flight()
        self._write_debiased()
        self.end_round()

    def _post_round(self) -> None:
        """Keep a 1/(k+1) share of (x, w) and post the k shares for the round's out-peers."""
        share = 1.0 / (self.options.sgp_peers + 1)
        for x in self.numerators:
            x.mul_(share)
        self.weight.mul_(share)
        (flat,) = self.flats
        outgoing = self.to_wire(self.numerators)  # the kept share is the sent share
        if self.options.gossip_overlap and outgoing[0] is self.numerators[0]:
            outgoing = flat.snapshot(outgoing)  # x changes while the messages travel: send a copy
        outgoing_w = self._weight_buffer("sent")
        outgoing_w.copy_(self.weight.reshape(1))
        sends: List[Message] = []
        recvs: List[Message] = []
        incoming = []
        rank = self.ctx.rank
        for peer in self.graph.out_peers(rank, self.round):
            sends += self.messages(peer, 0, outgoing) + [Message(peer, outgoing_w, _WEIGHT_TAG)]
        for i, peer in enumerate(self.graph.in_peers(rank, self.round)):
            bufs, w = flat.scratch(self.wire_dtype, slot=f"recv{i}"), self._weight_buffer(f"recv{i}")
            recvs += self.messages(peer, 0, bufs) + [Message(peer, w, _WEIGHT_TAG)]
            incoming.append((bufs, w))
        pending = self.post_round([SegmentRound(flat, sends, recvs)], what=f"SGP round {self.round}")
        self.in_flight = (pending, incoming)

    def _weight_buffer(self, slot: str) -> torch.Tensor:
        """A one-element float64 message buffer for the weight, allocated once per ``slot``."""
        if slot not in self._weight_buffers:
            self._weight_buffers[slot] = torch.empty(1, dtype=torch.float64, device=self.ctx.device)
        return self._weight_buffers[slot]

    def _receive_in_flight(self) -> None:
        """Wait for the posted round and add what arrived to (x, w)."""
        if self.in_flight is None:
            return
        pending, incoming = self.in_flight
        self.in_flight = None
        pending.wait(self.comm)
        for bufs, w in incoming:
            for x, got in zip(self.numerators, bufs):
                x.add_(got)
            self.weight.add_(w.reshape(()))

    def _write_debiased(self) -> None:
        (flat,) = self.flats
        with torch.no_grad():
            for buf, x in zip(flat.buffers.values(), self.numerators):
                torch.div(x, self.weight.to(x.dtype), out=buf)
            flat.unpack()

    def flush(self) -> None:
        if self.in_flight is not None:
            self._receive_in_flight()
            self._write_debiased()

    def state_dict(self) -> Dict[str, Any]:
        self.flush()
        return {**super().state_dict(), "weight": self.weight.cpu(),
                "numerators": [x.cpu() for x in self.numerators]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.weight = state["weight"].to(self.ctx.device)
        self.numerators = [x.to(self.ctx.device) for x in state["numerators"]]
