"""Crossover-SGD: each segment of the model is averaged with a different random peer.

Per round ``t`` and segment ``s`` every rank draws the same uniform derangement
``recv_from[s]`` from ``(seed, t, s)`` (:class:`topology.CrossoverSchedule`): rank ``i`` sends its
segment ``s`` to the rank that picked it and receives ``recv_from[s][i]``'s, then
``x_s <- (x_s + received) / 2``. Each rank sends and receives exactly the model's bytes per round,
whatever the number of segments; all segments' messages go out at once.

Segments: ``--chromosome coarse|fine`` (ResNet stages / residual blocks) or ``--segments N``.
Ablations of the study: ``--fair False`` (receivers pick senders independently: not load
balanced) and ``--segmented False`` (one permutation per round for all segments).
"""

from __future__ import annotations

from typing import List

import torch

from crossover_sgd.algorithms.gossip import GossipAlgorithm
from crossover_sgd.comm.p2p import Message, exchange
from crossover_sgd.comm.segments import Segment, split_model
from topology import CrossoverSchedule

__all__ = ["CrossoverSGD"]


class CrossoverSGD(GossipAlgorithm):
    name = "crossover"

    def split(self) -> List[Segment]:
        cfg = self.config
        if cfg.segments is not None:
            return split_model(self.model, num_segments=cfg.segments, buffers=cfg.gossip_buffers)
        return split_model(self.model, chromosome=cfg.chromosome, buffers=cfg.gossip_buffers)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().prepare(model)
        self.build_segments(None)  # checks --segments/--chromosome now, before anything is written
        self.schedule = CrossoverSchedule(self.ctx.world_size, len(self.segments), self.config.seed,
                                          fair=self.config.fair, segmented=self.config.segmented)
        self.flats = []  # rebuilt at the first step, when momentum buffers exist
        return model

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.ensure_segments(optimizer)
        rank = self.ctx.rank
        peers = self.schedule.peers(self.round)
        sends: List[Message] = []
        recvs: List[Message] = []
        received = []
        for s, flat in enumerate(self.flats):
            own = self.to_wire(flat.pack())
            source = int(peers.recv_from[s, rank])
            for receiver in peers.receivers(s, rank):
                sends += self.messages(receiver, s, own)
            if source != rank:
                incoming = flat.scratch(self.wire_dtype)
                recvs += self.messages(source, s, incoming)
                received.append((flat, incoming))
        self.check_finite([m.tensor for m in sends])
        exchange(sends, recvs, self.comm, what=f"crossover round {self.round}")
        self.average_received(received)
        self.comm.rounds += 1
