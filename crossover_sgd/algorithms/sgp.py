"""SGP, stochastic gradient push (Assran et al., ICML 2019): push-sum gossip on a time-varying
directed exponential graph.

Each rank keeps a numerator ``x`` (all mixed tensors) and a scalar weight ``w``, and trains on the
de-biased ``z = x / w`` (what the model's parameters hold). Per step::

    x <- x + (z_after_step - z_before_step)          # the local SGD update, applied to x
    send (x / (k+1), w / (k+1)) to each of the k out-peers of round t
    x <- x / (k+1) + sum of received x ;  w <- w / (k+1) + sum of received w
    z <- x / w

Peers of round ``t`` are at distances ``2^i`` rotating with ``t`` (:class:`topology.ExponentialGraph`,
``--sgp-peers k``). The mixing matrix is column stochastic: ``sum(w) = n`` and ``sum(x)`` are
conserved by every round. On these regular graphs ``w`` stays 1 and push-sum reduces to plain
averaging; the weights are kept anyway, as the algorithm defines them.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch

from crossover_sgd.algorithms.gossip import MAX_DTYPES, GossipAlgorithm
from crossover_sgd.comm.p2p import Message, exchange
from crossover_sgd.errors import ConfigError
from topology import ExponentialGraph, num_powers_of_two_below

__all__ = ["SGP"]


class SGP(GossipAlgorithm):
    name = "sgp"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().prepare(model)
        n, k = self.ctx.world_size, self.config.sgp_peers
        self.graph = None
        if n > 1:
            if k < 1 or k >= n:
                raise ConfigError(f"--sgp-peers {k} is invalid for {n} ranks: use 1 to {n - 1}")
            distinct = num_powers_of_two_below(n)
            if k > distinct:
                raise ConfigError(f"--sgp-peers {k} is invalid for {n} ranks: the exponential graph has only "
                                  f"{distinct} distinct peers (distances 1, 2, 4, ...); use 1 to {distinct}")
            self.graph = ExponentialGraph(n, k=k)
        self.weight = torch.ones((), dtype=torch.float64, device=self.ctx.device)
        self.numerators: List[torch.Tensor] = []
        return model

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.ensure_segments(optimizer)
        (flat,) = self.flats
        z = flat.pack()
        if not self.numerators:  # w is 1 before the first round, so x = z exactly
            self.numerators = [buf.clone() for buf in z]
        else:
            for x, z_now in zip(self.numerators, z):
                x.add_(z_now - x / self.weight.to(x.dtype))
        if self.graph is not None:
            self._push_sum()
        with torch.no_grad():
            for buf, x in zip(flat.buffers.values(), self.numerators):
                torch.div(x, self.weight.to(x.dtype), out=buf)
            flat.unpack()
        self.comm.rounds += 1

    def _push_sum(self) -> None:
        rank, k = self.ctx.rank, self.config.sgp_peers
        share = 1.0 / (k + 1)
        outgoing = [x * share for x in self.numerators]
        outgoing_w = (self.weight * share).reshape(1)
        sends: List[Message] = []
        recvs: List[Message] = []
        incoming = []
        for peer in self.graph.out_peers(rank, self.round):
            sends += self.messages(peer, 0, outgoing) + [Message(peer, outgoing_w, MAX_DTYPES - 1)]
        for peer in self.graph.in_peers(rank, self.round):
            bufs, w = [torch.empty_like(x) for x in outgoing], torch.empty_like(outgoing_w)
            recvs += self.messages(peer, 0, bufs) + [Message(peer, w, MAX_DTYPES - 1)]
            incoming.append((bufs, w))
        exchange(sends, recvs, self.comm, what=f"SGP round {self.round}")
        for x, out in zip(self.numerators, outgoing):
            x.copy_(out)
        self.weight.copy_(outgoing_w.reshape(()))
        for bufs, w in incoming:
            for x, got in zip(self.numerators, bufs):
                x.add_(got)
            self.weight.add_(w.reshape(()))

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "weight": self.weight.cpu(),
                "numerators": [x.cpu() for x in self.numerators]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.weight = state["weight"].to(self.ctx.device)
        self.numerators = [x.to(self.ctx.device) for x in state["numerators"]]
