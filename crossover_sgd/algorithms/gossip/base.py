"""What the gossip algorithms (SGP, Crossover-SGD, hierarchical Crossover-SGD) share: replicas that
differ between steps, the segments of tensors they mix, point-to-point rounds and the round clock.

Messages travel in the model's dtype or, with ``--gossip-dtype fp32|fp16|bf16``, cast to that
dtype (half precision halves the bytes; averaging happens in the model's dtype). Mixed tensors:
the parameters; with ``--gossip-buffers`` also floating-point buffers (BatchNorm
running statistics); with ``--gossip-momentum`` also each parameter's momentum buffer, in the
parameter's segment (kept local by default, as in the study). Every rank starts from rank 0's
weights. Schedules are drawn from ``--seed`` and the round counter (:attr:`GossipAlgorithm.round`,
advanced once per round and saved in checkpoints), identically on every rank. The traffic counter
``comm.rounds`` counts the same rounds for the reports; it is not the schedules' clock.

Segments are cut once, in ``prepare`` (``--chromosome``/``--segments``, :class:`SegmentOptions`,
:func:`segment_model`); their flat buffers are built at the first step, when momentum buffers exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.algorithms.options import AlgorithmOptions, option
from crossover_sgd.comm import FlatParams
from crossover_sgd.comm.p2p import Message, Pending, post
from crossover_sgd.errors import ConfigError, DivergedError
from crossover_sgd.algorithms.gossip.segments import CHROMOSOMES, Segment, attach_momentum, split_model

__all__ = ["GossipAlgorithm", "GossipOptions", "OverlapOptions", "SegmentOptions", "SegmentRound", "MAX_DTYPES",
           "segment_model"]

#: Tags of one segment's messages: ``segment * MAX_DTYPES + dtype index``.
MAX_DTYPES = 8
#: ``--gossip-dtype`` choices: ``model`` sends every tensor in its own dtype.
WIRE_DTYPES = {"model": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class GossipOptions(AlgorithmOptions):
    """What every gossip algorithm mixes, and in which dtype messages travel."""

    gossip_buffers: bool = option(False, "gossip: also mix BatchNorm running statistics", metavar="BOOL")
    gossip_momentum: bool = option(False, "gossip: also mix momentum buffers (default: kept local, as in the study)",
                                   metavar="BOOL")
    gossip_dtype: str = option("model", "gossip: dtype of messages: model (default), fp32, fp16 or bf16 (half the "
                                        "bytes)", choices=tuple(WIRE_DTYPES))


@dataclass
class OverlapOptions(AlgorithmOptions):
    """Overlapped rounds (sgp, crossover). Strict: a run that asks for overlap and silently gets
    sequential rounds would measure something else."""

    gossip_overlap: bool = option(False, "sgp, crossover: overlap the exchange with the next step's computation, "
                                         "mixed one step late (for sgp: OSGP)", aliases=("--sgp-overlap",),
                                  strict=True, metavar="BOOL")


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


def segment_model(model: nn.Module, options: SegmentOptions, buffers: bool) -> List[Segment]:
    """``model``'s mixed tensors cut as ``options`` say: ``--segments N`` parts of about equal bytes,
    else by ``--chromosome``; with ``buffers``, floating-point buffers too. Raises ConfigError for a
    value the model does not allow (``{segments}`` larger than its number of tensors)."""
    if options.segments is not None:
        return split_model(model, num_segments=options.segments, buffers=buffers)
    return split_model(model, chromosome=options.chromosome, buffers=buffers)


@dataclass
class SegmentRound:
    """One segment's part of a round: its messages and, when it receives, where they land."""

    flat: FlatParams
    sends: List[Message] = field(default_factory=list)
    recvs: List[Message] = field(default_factory=list)
    incoming: Optional[List[torch.Tensor]] = None  # receive buffers; None: nothing to mix
    sent: Optional[List[torch.Tensor]] = None  # overlapped rounds: the values sent (a snapshot)


class GossipAlgorithm(Algorithm):
    """Base of algorithms whose replicas differ between steps and are mixed after each step.

    ``prepare`` cuts the model into :attr:`segments` (:meth:`split`); the first
    :meth:`ensure_flats` attaches momentum buffers (``--gossip-momentum``) and moves every segment
    into its flat buffers (:attr:`flats`). A subclass's ``after_step`` plans and mixes one round,
    then calls :meth:`end_round`, which advances :attr:`round`.
    """

    replicas_identical = False
    options_class = GossipOptions

    def __init__(self, ctx, config, out=None):
        super().__init__(ctx, config, out)
        if ctx.device.type == "cuda" and ctx.backend == "gloo":
            raise ConfigError("{backend} gloo cannot send CUDA tensors point to point: gossip on GPUs needs "
                              "{backend} nccl, one GPU per rank (or {device} cpu)")
        self.segments: List[Segment] = []
        self.flats: List[FlatParams] = []
        self._round = 0

    def split(self) -> List[Segment]:
        """The model's mixed tensors as segments (default: one segment holding everything)."""
        return split_model(self.model, num_segments=1, buffers=self.options.gossip_buffers)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Start from the first trainer's weights and cut the model into segments, once (a bad
        ``--segments`` or ``--chromosome`` is refused here, before anything is written)."""
        model = super().prepare(model)
        self.segments = self.split()
        self.flats = []
        return model

    def ensure_flats(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """On first use, attach momentum buffers to the segments when they are mixed (they exist only
        after the first optimizer step) and move every segment into its flat buffers."""
        if self.flats:
            return
        if self.options.gossip_momentum and optimizer is not None:
            attach_momentum(self.segments, self.model, optimizer)
        self.flats = [FlatParams(s.tensors, share_storage=True) for s in self.segments]

    @property
    def round(self) -> int:
        """The gossip round this rank is in (0 before the first): the clock of the schedules."""
        return self._round

    def end_round(self) -> None:
        """Advance to the next round (and count it in ``comm.rounds``, for the reports)."""
        self._round += 1
        self.comm.rounds += 1

    @property
    def wire_dtype(self) -> Optional[torch.dtype]:
        """The dtype messages travel in (``--gossip-dtype``); None: each buffer's own dtype."""
        return WIRE_DTYPES[self.options.gossip_dtype]

    def check_finite(self, buffers: List[torch.Tensor]) -> None:
        """Refuse to send non-finite values to peers (one scalar read per round)."""
        floats = [b for b in buffers if b.is_floating_point() and b.numel()]
        # min and max of each buffer (one pass, no buffer-sized temporary): NaN and inf show up there
        extremes = [value for b in floats for value in torch.aminmax(b)]
        if extremes and not bool(torch.isfinite(torch.stack(extremes)).all()):
            raise DivergedError(f"rank {self.ctx.rank}: parameters are not finite in {self.name} round "
                                f"{self.round} (the run diverged); they are not sent to peers: lower --lr "
                                "or use --clip-grad-norm")

    def to_wire(self, buffers: List[torch.Tensor]) -> List[torch.Tensor]:
        """``buffers`` cast to the wire dtype (the buffers themselves when no cast is needed)."""
        dtype = self.wire_dtype
        return [b if dtype is None or not b.is_floating_point() else b.to(dtype) for b in buffers]

    def post_round(self, parts: List[SegmentRound], what: str) -> Pending:
        """Check what is sent, then post every message of the round at once."""
        sends = [m for part in parts for m in part.sends]
        self.check_finite([m.tensor for m in sends])
        with self.comm.timed():
            return post(sends, [m for part in parts for m in part.recvs], what=what)

    def mix(self, pending: Pending, parts: List[SegmentRound]) -> None:
        """Average each segment with what its peer sent, segment by segment as the messages
        arrive (the segments still travelling overlap the averaging of those that arrived).

        A segment is written only when its own sends are done too: they read the same memory.
        Sequential rounds: ``x <- (x + received) / 2``. Overlapped rounds, which arrive one step
        late: ``x <- x + (received - sent) / 2``, i.e. the average of the sent values plus the
        local update made since (the global mean is conserved all the same).
        """
        with torch.no_grad():
            for part in parts:
                pending.wait(self.comm, part.sends + part.recvs)
                if part.incoming is None:
                    continue
                for buf, other, sent in zip(part.flat.buffers.values(), part.incoming,
                                            part.sent or [None] * len(part.incoming)):
                    if sent is None:
                        buf.lerp_(other.to(buf.dtype), 0.5)  # (x + received) / 2 in one pass
                    else:
                        buf.add_(other.to(buf.dtype).sub_(sent), alpha=0.5)
                part.flat.unpack()
        pending.wait(self.comm)

    @staticmethod
    def messages(peer: int, segment: int, buffers: List[torch.Tensor]) -> List[Message]:
        """One message per dtype buffer of ``segment``, tagged so that pairs cannot mix them up."""
        return [Message(peer, buf, segment * MAX_DTYPES + i) for i, buf in enumerate(buffers)]

    def exchange(self, segment: int, send_to: Sequence[int], recv_from: int, snapshot: bool = False) -> SegmentRound:
        """``segment``'s part of a round: its values to each rank of ``send_to``, ``recv_from``'s into
        a receive buffer to average with (none when ``recv_from`` is this rank). ``snapshot``: send
        a copy (overlapped rounds: the segment changes while its messages travel)."""
        flat = self.flats[segment]
        part = SegmentRound(flat)
        own = flat.pack()
        if snapshot:
            own = part.sent = flat.snapshot(own)
        wire = self.to_wire(own)
        for receiver in send_to:
            part.sends += self.messages(receiver, segment, wire)
        if recv_from != self.ctx.rank:
            part.incoming = flat.scratch(self.wire_dtype)
            part.recvs = self.messages(recv_from, segment, part.incoming)
        return part

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "round": self._round}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._round = int(state["round"])
