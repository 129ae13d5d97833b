"""Hierarchical Crossover-SGD: average inside each node, crossover between nodes.

Nodes are consecutive groups of ``G`` ranks (the launcher's ranks per node, ``--gpu_per_node G``,
or ``--groupnum`` groups of ``n / groupnum``). Per optimizer step:

1. **Intra-node stage** (``before_step``): gradients and floating-point buffers (BatchNorm running
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
3. **Reassembly**: each segment is broadcast inside the node from the local rank that carried it.

With SGD, a step is ``x <- kron(W_nodes, J_G) (x - lr * m)``, with ``m`` the momentum of the
node-averaged gradient ``J_G g`` (:meth:`topology.HierarchicalSchedule.mixing_matrices`).
``inter_comm`` counts stage 2 only (metrics columns ``inter_node_bytes_sent``/``_recv``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from crossover_sgd.algorithms.gossip.base import GossipOptions, SegmentRound
from crossover_sgd.algorithms.gossip.crossover import CrossoverSGD, SegmentOptions
from crossover_sgd.algorithms.options import option
from crossover_sgd.comm import CommStats, FlatParams, ring_allreduce_bytes
from crossover_sgd.errors import ConfigError, PeerError, divides_world_error
from topology import HierarchicalSchedule

__all__ = ["HierarchicalCrossoverSGD", "HierarchicalOptions"]

log = logging.getLogger(__name__)


@dataclass
class HierarchicalOptions(GossipOptions, SegmentOptions):
    groupnum: Optional[int] = option(None, "hierarchical-crossover: number of nodes (default: the launcher's / "
                                           "--gpu_per_node)", minimum=1)

    def check(self, world_size: Optional[int]) -> None:
        if self.groupnum is not None and world_size is not None and world_size % self.groupnum:
            raise divides_world_error("groupnum", self.groupnum, world_size)


class HierarchicalCrossoverSGD(CrossoverSGD):
    name = "hierarchical-crossover"
    options_class = HierarchicalOptions
    metric_columns = {"inter_node_bytes_sent": 0, "inter_node_bytes_recv": 0}

    def __init__(self, ctx, config):
        super().__init__(ctx, config)
        self.inter_comm = CommStats()

    def node_size(self) -> int:
        n, groupnum = self.ctx.world_size, self.options.groupnum
        if groupnum is None:
            return self.ctx.local_size
        if groupnum < 1 or n % groupnum:
            raise divides_world_error("groupnum", groupnum, n)
        return n // groupnum

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().prepare(model)
        n, local_size = self.ctx.world_size, self.node_size()
        if n // local_size < 2:
            raise ConfigError(f"hierarchical crossover needs at least 2 nodes, but all {n} ranks form one node "
                              f"of {local_size}: set --gpu_per_node or --groupnum to make 2 or more nodes")
        self.build_segments(None)
        self.schedule = HierarchicalSchedule(n, len(self.segments), self.config.seed, local_size=local_size,
                                             fair=self.options.fair, segmented=self.options.segmented,
                                             segment_bytes=[s.nbytes for s in self.segments])
        self.flats = []
        layout = self.schedule.layout
        self.node = layout.node_of(self.ctx.rank)
        groups = [dist.new_group(layout.ranks_of(node)) for node in range(layout.num_nodes)]  # all ranks, same order
        self.node_group = groups[self.node]
        self.owner_rank = [layout.rank_of(self.node, int(local)) for local in self.schedule.owner_of_segment]
        log.info("hierarchical crossover: %d nodes of %d consecutive ranks (rank r on node r // %d), %d segments",
                 layout.num_nodes, local_size, local_size, len(self.segments))
        return model

    def _node_average(self, tensors: List[torch.Tensor]) -> None:
        size = self.schedule.local_size
        if size == 1 or not tensors:
            return
        flat = FlatParams(tensors)
        with self.comm.timed():
            works = [dist.all_reduce(buf, group=self.node_group, async_op=True) for buf in flat.pack()]
            self._wait(works, "intra-node average")
            for buf in flat.buffers.values():
                buf.div_(size)
            flat.unpack()
        volume = ring_allreduce_bytes(flat.nbytes, size)
        self.comm.add(volume, volume)

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Average gradients and floating-point buffers inside the node (one all-reduce each)."""
        self._node_average([p.grad for p in self.model.parameters() if p.grad is not None])
        self._node_average([b for b in self.model.buffers() if b.is_floating_point()])

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.ensure_segments(optimizer)
        parts = []
        for transfer in self.schedule.inter_node_plan(self.round)[self.ctx.rank]:
            flat = self.flats[transfer.segment]
            part = SegmentRound(flat)
            own = self.to_wire(flat.pack())
            for receiver in transfer.send_to:
                part.sends += self.messages(receiver, transfer.segment, own)
            if transfer.recv_from != self.ctx.rank:
                part.incoming = flat.scratch(self.wire_dtype)
                part.recvs = self.messages(transfer.recv_from, transfer.segment, part.incoming)
            parts.append(part)
        before = (self.comm.bytes_sent, self.comm.bytes_recv, self.comm.seconds)
        self.mix(self.post_round(parts, what=f"inter-node crossover round {self.round}"), parts)
        self.inter_comm.add(self.comm.bytes_sent - before[0], self.comm.bytes_recv - before[1],
                            self.comm.seconds - before[2])
        self.inter_comm.rounds += 1
        self._reassemble()
        self.comm.rounds += 1

    def _reassemble(self) -> None:
        """Broadcast every segment inside the node from the local rank that carried it."""
        if self.schedule.local_size == 1:
            return
        with self.comm.timed():
            works = []
            for flat, owner in zip(self.flats, self.owner_rank):  # received straight into the segment
                works += [dist.broadcast(buf, owner, group=self.node_group, async_op=True) for buf in flat.pack()]
                mine = owner == self.ctx.rank
                self.comm.add(flat.nbytes if mine else 0, 0 if mine else flat.nbytes)
            self._wait(works, "intra-node reassembly")
            for flat, owner in zip(self.flats, self.owner_rank):
                if owner != self.ctx.rank:
                    flat.unpack()

    def _wait(self, works, what: str) -> None:
        try:
            for work in works:
                work.wait()
        except RuntimeError as exc:
            peers = self.schedule.layout.ranks_of(self.node)
            raise PeerError(f"{what} with node ranks {peers} failed on rank {self.ctx.rank}: "
                            f"a peer died or stopped answering ({str(exc).strip().splitlines()[0][:200]})") from exc

    def metrics(self) -> Dict[str, float]:
        comm = self.inter_comm
        return {"inter_node_bytes_sent": comm.bytes_sent, "inter_node_bytes_recv": comm.bytes_recv}

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "inter_comm": self.inter_comm.as_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.inter_comm.load(state["inter_comm"])
