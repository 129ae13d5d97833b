"""What the gossip algorithms (SGP, Crossover-SGD) share: replicas that differ between steps,
the segments of tensors they mix, and point-to-point rounds.

Messages travel in the model's dtype or, with ``--gossip-dtype fp32|fp16|bf16``, cast to that
dtype (half precision halves the bytes; averaging happens in the model's dtype). Mixed tensors:
the parameters; with ``--gossip-buffers`` also floating-point buffers (BatchNorm
running statistics); with ``--gossip-momentum`` also each parameter's momentum buffer, in the
parameter's segment (kept local by default, as in the study). Every rank starts from rank 0's
weights. Schedules are drawn from ``--seed`` and the round counter, identically on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch

from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.algorithms.options import AlgorithmOptions, option
from crossover_sgd.comm import FlatParams
from crossover_sgd.comm.p2p import Message, Pending, post
from crossover_sgd.errors import DivergedError
from crossover_sgd.algorithms.gossip.segments import Segment, attach_momentum, split_model

__all__ = ["GossipAlgorithm", "GossipOptions", "OverlapOptions", "SegmentRound", "MAX_DTYPES"]

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
class SegmentRound:
    """One segment's part of a round: its messages and, when it receives, where they land."""

    flat: FlatParams
    sends: List[Message] = field(default_factory=list)
    recvs: List[Message] = field(default_factory=list)
    incoming: Optional[List[torch.Tensor]] = None  # receive buffers; None: nothing to mix
    sent: Optional[List[torch.Tensor]] = None  # overlapped rounds: the values sent (a snapshot)


class GossipAlgorithm(Algorithm):
    """Base of algorithms whose replicas differ between steps and are mixed after each step."""

    replicas_identical = False
    options_class = GossipOptions

    def __init__(self, ctx, config):
        super().__init__(ctx, config)
        self.segments: List[Segment] = []
        self.flats: List[FlatParams] = []

    def split(self) -> List[Segment]:
        """The model's mixed tensors as segments (default: one segment holding everything)."""
        return split_model(self.model, num_segments=1, buffers=self.options.gossip_buffers)

    def build_segments(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Cut the model into segments (with momentum buffers attached when they are mixed)."""
        self.segments = self.split()
        if self.options.gossip_momentum and optimizer is not None:
            attach_momentum(self.segments, self.model, optimizer)
        self.flats = [FlatParams(s.tensors, share_storage=True) for s in self.segments]

    def ensure_segments(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Build segments on first use (momentum buffers exist only after the first step)."""
        if not self.flats:
            self.build_segments(optimizer)

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

    @property
    def round(self) -> int:
        return self.comm.rounds
