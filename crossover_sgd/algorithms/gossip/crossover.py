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

from crossover_sgd.algorithms.gossip.base import (GossipAlgorithm, GossipOptions, OverlapOptions, SegmentOptions,
                                                  SegmentRound, segment_model)
from crossover_sgd.algorithms.gossip.segments import Segment
from crossover_sgd.comm.p2p import Pending
from topology import CrossoverSchedule

__all__ = ["CrossoverSGD", "CrossoverOptions", "SegmentOptions"]


@dataclass
class CrossoverOptions(GossipOptions, OverlapOptions, SegmentOptions):
    pass


class CrossoverSGD(GossipAlgorithm):
    name = "crossover"
    options_class = CrossoverOptions

    def split(self) -> List[Segment]:
        return segment_model(self.model, self.options, buffers=self.options.gossip_buffers)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().prepare(model)
        self.schedule = CrossoverSchedule(self.ctx.world_size, len(self.segments), self.config.seed,
                                          fair=self.options.fair, segmented=self.options.segmented)
        self.in_flight: Optional[Tuple[Pending, List[SegmentRound]]] = None
        return model

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.ensure_flats(optimizer)
        self.flush()
        parts = self.plan_round()
        pending = self.post_round(parts, what=f"crossover round {self.round}")
        if self.options.gossip_overlap:
            self.in_flight = (pending, parts)
        else:
            self.mix(pending, parts)
        self.end_round()

    def plan_round(self) -> List[SegmentRound]:
        """Every segment's messages for this round: the segment to its receivers, the source's in."""
        rank = self.ctx.rank
        peers = self.schedule.peers(self.round)
        return [self.exchange(s, peers.receivers(s, rank), int(peers.recv_from[s, rank]),
                              snapshot=self.options.gossip_overlap)
                for s in range(len(self.flats))]

    def flush(self) -> None:
        if self.in_flight is not None:
            pending, parts = self.in_flight
            self.in_flight = None
            self.mix(pending, parts)

    def state_dict(self) -> Dict[str, Any]:
        self.flush()
        return super().state_dict()
