"""Crossover-SGD: each segment of the model is averaged with a different random peer.

Per round ``t`` and segment ``s`` every rank draws the same uniform derangement
``recv_from[s]`` from ``(seed, t, s)`` (:class:`topology.CrossoverSchedule`): rank ``i`` sends its
segment ``s`` to the rank that picked it and receives ``recv_from[s][i]``'s, then
``x_s <- (x_s + received) / 2``. Each rank sends and receives exactly the model's bytes per round,
whatever the number of segments; all segments' messages go out at once.

Segments: ``--chromosome coarse|fine`` (ResNet stages / residual blocks) or ``--segments N``.
Ablations of the study: ``--fair False`` (receivers pick senders independently: not load
balanced) and ``--segmented False`` (one permutation per round for all segments).

The segments live in flat buffers that *are* the parameters' memory (no packing), and each
segment is averaged as soon as its message has arrived, while later segments still travel.

**Overlap** (``--gossip-overlap True``, not in the study): the round's messages (a snapshot of the
segments) are posted and the step returns at once; they travel while the next forward/backward
computes and are mixed one step late as ``x <- x + (received - sent) / 2``: the average of the
sent values plus the local update made since. The global mean is conserved as in sequential
rounds; with no local update in between the result equals the sequential round's. ``flush()``
(before evaluation and checkpoints) mixes what is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from crossover_sgd.algorithms.gossip.base import GossipAlgorithm, GossipOptions, OverlapOptions, SegmentRound
from crossover_sgd.algorithms.options import AlgorithmOptions, option
from crossover_sgd.comm.p2p import Pending
from crossover_sgd.algorithms.gossip.segments import CHROMOSOMES, Segment, split_model
from topology import CrossoverSchedule

__all__ = ["CrossoverSGD", "CrossoverOptions", "SegmentOptions"]


@dataclass
class SegmentOptions(AlgorithmOptions):
    """How the model is cut into segments and how peers are drawn (crossover, hierarchical)."""

    chromosome: str = option("fine", "crossover segments: coarse (stages) or fine (blocks)", choices=CHROMOSOMES)
    segments: Optional[int] = option(None, "crossover: N segments of about equal bytes instead", minimum=1)
    fair: bool = option(True, "crossover: load-balanced senders (False: the study's 'no fairness' ablation)",
                        metavar="BOOL")
    segmented: bool = option(True, "crossover: a peer per segment (False: the 'no segmentation' ablation)",
                             metavar="BOOL")

    def unused(self) -> Dict[str, str]:
        return {"chromosome": "{segments} replaces it"} if self.segments is not None else {}


@dataclass
class CrossoverOptions(GossipOptions, OverlapOptions, SegmentOptions):
    pass


class CrossoverSGD(GossipAlgorithm):
    name = "crossover"
    options_class = CrossoverOptions

    def split(self) -> List[Segment]:
        cfg = self.options
        if cfg.segments is not None:
            return split_model(self.model, num_segments=cfg.segments, buffers=cfg.gossip_buffers)
        return split_model(self.model, chromosome=cfg.chromosome, buffers=cfg.gossip_buffers)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().prepare(model)
        self.build_segments(None)  # checks --segments/--chromosome now, before anything is written
        self.schedule = CrossoverSchedule(self.ctx.world_size, len(self.segments), self.config.seed,
                                          fair=self.options.fair, segmented=self.options.segmented)
        self.flats = []  # rebuilt at the first step, when momentum buffers exist
        self.in_flight: Optional[Tuple[Pending, List[SegmentRound]]] = None
        return model

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.ensure_segments(optimizer)
        self.flush()
        parts = self.plan_round()
        pending = self.post_round(parts, what=f"crossover round {self.round}")
        if self.options.gossip_overlap:
            self.in_flight = (pending, parts)
        else:
            self.mix(pending, parts)
        self.comm.rounds += 1

    def plan_round(self) -> List[SegmentRound]:
        """Every segment's messages for this round: the segment to its receivers, the source's in."""
        rank, overlap = self.ctx.rank, self.options.gossip_overlap
        peers = self.schedule.peers(self.round)
        parts = []
        for s, flat in enumerate(self.flats):
            part = SegmentRound(flat)
            own = flat.pack()
            if overlap:  # the segment changes while its message travels: send a snapshot
                own = part.sent = flat.snapshot(own)
            wire = self.to_wire(own)
            for receiver in peers.receivers(s, rank):
                part.sends += self.messages(receiver, s, wire)
            source = int(peers.recv_from[s, rank])
            if source != rank:
                part.incoming = flat.scratch(self.wire_dtype)
                part.recvs = self.messages(source, s, part.incoming)
            parts.append(part)
        return parts

    def flush(self) -> None:
        if self.in_flight is not None:
            pending, parts = self.in_flight
            self.in_flight = None
            self.mix(pending, parts)

    def state_dict(self) -> Dict[str, Any]:
        self.flush()
        return super().state_dict()
