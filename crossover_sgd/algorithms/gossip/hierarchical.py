"""Hierarchical Crossover-SGD: average inside each node, crossover between nodes.

Nodes are consecutive groups of ``G`` ranks (the launcher's ranks per node, ``--gpu_per_node G``,
or ``--groupnum`` groups of ``n / groupnum``). Per optimizer step:

1. **Intra-node stage** (``before_step``, :class:`IntraNodeStage`): gradients and floating-point buffers (BatchNorm running
   statistics, which each rank's forward updated from its own batch) are all-reduce-averaged
   inside the node, so every local rank takes the same step and the node's replicas, parameters
   and buffers, stay identical (equivalent to the study's reduce-to-root, root steps, broadcast,
   without idle ranks). This happens whatever ``--gossip-buffers`` says.
2. **Inter-node stage** (``after_step``): the crossover schedule runs over nodes
   (:class:`topology.HierarchicalSchedule`). Segments are split among the ``G`` local ranks with
   about equal bytes; local rank ``r`` sends *its* segments to local rank ``r`` of the peer node
   and averages them with what local rank ``r`` of the source node sent. Every GPU's link carries
   ``1/G`` of the model: inter-node bytes per GPU shrink with the number of GPUs per node.
   ``--gossip-buffers`` adds the buffers to the segments (they then travel between nodes too);
   ``--gossip-momentum`` adds momentum buffers.
3. **Reassembly** (:class:`IntraNodeStage` again): each segment is broadcast inside the node from
   the local rank that carried it.

With SGD, a step is ``x <- kron(W_nodes, J_G) (x - lr * m)``, with ``m`` the momentum of the
node-averaged gradient ``J_G g`` (:meth:`topology.HierarchicalSchedule.mixing_matrices`).
``comm`` counts all three stages; ``inter_comm`` counts stage 2 only (metrics columns
``inter_node_bytes_sent``/``_recv``).

The algorithm is composed, not derived from Crossover-SGD: it shares with it the cutting of the
model (:class:`~crossover_sgd.algorithms.gossip.base.SegmentOptions`,
:func:`~crossover_sgd.algorithms.gossip.base.segment_model`) and the point-to-point round of the
gossip family (:meth:`~crossover_sgd.algorithms.gossip.base.GossipAlgorithm.exchange`, ``mix``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from crossover_sgd.algorithms.gossip.base import GossipAlgorithm, GossipOptions, SegmentOptions, segment_model
from crossover_sgd.algorithms.gossip.segments import Segment
from crossover_sgd.algorithms.options import option
from crossover_sgd.comm import CommStats, FlatParams, average, consecutive_group, peer_failure
from crossover_sgd.errors import ConfigError, divides_world_error
from topology import HierarchicalSchedule, NodeLayout

__all__ = ["HierarchicalCrossoverSGD", "HierarchicalOptions", "IntraNodeStage"]

log = logging.getLogger(__name__)


@dataclass
class HierarchicalOptions(GossipOptions, SegmentOptions):
    groupnum: Optional[int] = option(None, "hierarchical-crossover: number of nodes (default: the launcher's / "
                                           "--gpu_per_node)", minimum=1)

    def check(self, world_size: Optional[int]) -> None:
        if self.groupnum is not None and world_size is not None and world_size % self.groupnum:
            raise divides_world_error("groupnum", self.groupnum, world_size)


class IntraNodeStage:
    """The collectives inside one node of ``layout``: this rank's node, its process group, and the
    two intra-node stages of a step (averaging before it, reassembly after the inter-node round).

    Creating it is collective: every rank of the world creates every node's group, in node order
    (:func:`~crossover_sgd.comm.consecutive_group`). Traffic and time go to ``stats``; a lost peer
    raises :class:`~crossover_sgd.errors.PeerError` naming the node's ranks. On a node of one rank
    nothing is communicated.
    """

    def __init__(self, layout: NodeLayout, rank: int, stats: CommStats):
        self.layout, self.rank, self.stats = layout, rank, stats
        self.node = layout.node_of(rank)
        self.ranks = layout.ranks_of(self.node)  # world ranks, by local rank
        self.group = consecutive_group(rank, layout.n, layout.local_size)

    @property
    def size(self) -> int:
        return self.layout.local_size

    def average(self, model: nn.Module) -> None:
        """Average ``model``'s gradients, then its floating-point buffers, over the node (one
        all-reduce each)."""
        for tensors in ([p.grad for p in model.parameters() if p.grad is not None],
                        [b for b in model.buffers() if b.is_floating_point()]):
            average(tensors, group=self.group, stats=self.stats, what="intra-node average")

    def reassemble(self, flats: Sequence[FlatParams], owners: Sequence[int]) -> None:
        """Broadcast every segment ``flats[s]`` inside the node from the rank ``owners[s]`` that
        carried it, received straight into the segment."""
        if self.size == 1:
            return
        with self.stats.timed():
            buffers = [flat.pack() for flat in flats]
            with peer_failure("intra-node reassembly", self.ranks):
                works = [dist.broadcast(buf, owner, group=self.group, async_op=True)
                         for bufs, owner in zip(buffers, owners) for buf in bufs]
                for work in works:
                    work.wait()
            for flat, owner in zip(flats, owners):
                if owner != self.rank:
                    flat.unpack()
        sent = sum(flat.nbytes for flat, owner in zip(flats, owners) if owner == self.rank)
        self.stats.add(sent, sum(flat.nbytes for flat in flats) - sent)


@contextmanager
def _counted_also_in(stats: CommStats, extra: CommStats) -> Iterator[None]:
    """Add to ``extra`` what ``stats`` counts during the block."""
    before = (stats.bytes_sent, stats.bytes_recv, stats.seconds)
    yield
    extra.add(stats.bytes_sent - before[0], stats.bytes_recv - before[1], stats.seconds - before[2])


class HierarchicalCrossoverSGD(GossipAlgorithm):
    """An :class:`IntraNodeStage` and the inter-node crossover of a :class:`topology.HierarchicalSchedule`."""

    name = "hierarchical-crossover"
    options_class = HierarchicalOptions
    metric_columns = {"inter_node_bytes_sent": 0, "inter_node_bytes_recv": 0}

    def __init__(self, ctx, config, out=None):
        super().__init__(ctx, config, out)
        self.inter_comm = CommStats()

    def node_size(self) -> int:
        n, groupnum = self.ctx.world_size, self.options.groupnum
        if groupnum is None:
            return self.ctx.local_size
        if groupnum < 1 or n % groupnum:
            raise divides_world_error("groupnum", groupnum, n)
        return n // groupnum

    def split(self) -> List[Segment]:
        return segment_model(self.model, self.options, buffers=self.options.gossip_buffers)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().prepare(model)  # rank 0's weights, the segments
        n, local_size = self.ctx.world_size, self.node_size()
        if n // local_size < 2:
            raise ConfigError(f"hierarchical crossover needs at least 2 nodes, but all {n} ranks form one node "
                              f"of {local_size}: set {{gpu_per_node}} or {{groupnum}} to make 2 or more nodes")
        self.schedule = HierarchicalSchedule(n, len(self.segments), self.config.seed, local_size=local_size,
                                             fair=self.options.fair, segmented=self.options.segmented,
                                             segment_bytes=[s.nbytes for s in self.segments])
        self.stage = IntraNodeStage(self.schedule.layout, self.ctx.rank, self.comm)
        #: the world rank that carries each segment between nodes (and broadcasts it in the node)
        self.owner_rank = [self.stage.ranks[int(local)] for local in self.schedule.owner_of_segment]
        log.info("hierarchical crossover: %d nodes of %d consecutive ranks (rank r on node r // %d), %d segments",
                 self.schedule.num_nodes, local_size, local_size, len(self.segments))
        return model

    @property
    def node(self) -> int:
        return self.stage.node

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Average gradients and floating-point buffers inside the node."""
        self.stage.average(self.model)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The inter-node round on the segments this rank carries, then the reassembly in the node."""
        self.ensure_flats(optimizer)
        plan = self.schedule.inter_node_plan(self.round)[self.ctx.rank]
        parts = [self.exchange(t.segment, t.send_to, t.recv_from) for t in plan]
        with _counted_also_in(self.comm, self.inter_comm):
            self.mix(self.post_round(parts, what=f"inter-node crossover round {self.round}"), parts)
        self.inter_comm.rounds += 1
        self.stage.reassemble(self.flats, self.owner_rank)
        self.end_round()

    def metrics(self) -> Dict[str, float]:
        comm = self.inter_comm
        return {"inter_node_bytes_sent": comm.bytes_sent, "inter_node_bytes_recv": comm.bytes_recv}

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "inter_comm": self.inter_comm.as_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.inter_comm.load(state["inter_comm"])
