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

from typing import List, Optional, Tuple

import torch

from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.comm import FlatParams
from crossover_sgd.comm.p2p import Message
from crossover_sgd.errors import DivergedError
from crossover_sgd.comm.segments import Segment, attach_momentum, split_model

__all__ = ["GossipAlgorithm", "MAX_DTYPES"]

#: Tags of one segment's messages: ``segment * MAX_DTYPES + dtype index``.
MAX_DTYPES = 8
#: ``--gossip-dtype`` choices: ``model`` sends every tensor in its own dtype.
WIRE_DTYPES = {"model": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class GossipAlgorithm(Algorithm):
    """Base of algorithms whose replicas differ between steps and are mixed after each step."""

    replicas_identical = False

    def __init__(self, ctx, config):
        super().__init__(ctx, config)
        self.segments: List[Segment] = []
        self.flats: List[FlatParams] = []

    def split(self) -> List[Segment]:
        """The model's mixed tensors as segments (default: one segment holding everything)."""
        return split_model(self.model, num_segments=1, buffers=self.config.gossip_buffers)

    def build_segments(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Cut the model into segments (with momentum buffers attached when they are mixed)."""
        self.segments = self.split()
        if self.config.gossip_momentum and optimizer is not None:
            attach_momentum(self.segments, self.model, optimizer)
        self.flats = [FlatParams(s.tensors) for s in self.segments]

    def ensure_segments(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Build segments on first use (momentum buffers exist only after the first step)."""
        if not self.flats:
            self.build_segments(optimizer)

    @property
    def wire_dtype(self) -> Optional[torch.dtype]:
        """The dtype messages travel in (``--gossip-dtype``); None: each buffer's own dtype."""
        return WIRE_DTYPES[self.config.gossip_dtype]

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

    def average_received(self, received: List[Tuple[FlatParams, List[torch.Tensor]]]) -> None:
        """``x <- (x + received) / 2`` per segment, then write the segments back to the model."""
        with torch.no_grad():
            for flat, incoming in received:
                for buf, other in zip(flat.buffers.values(), incoming):
                    buf.lerp_(other.to(buf.dtype), 0.5)  # (x + received) / 2 in one pass
                flat.unpack()

    @staticmethod
    def messages(peer: int, segment: int, buffers: List[torch.Tensor]) -> List[Message]:
        """One message per dtype buffer of ``segment``, tagged so that pairs cannot mix them up."""
        return [Message(peer, buf, segment * MAX_DTYPES + i) for i, buf in enumerate(buffers)]

    @property
    def round(self) -> int:
        return self.comm.rounds
