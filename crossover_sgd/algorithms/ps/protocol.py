"""The letters between workers and server shards, and what each carries.

Every letter is a :class:`~crossover_sgd.comm.mailbox.Mailbox` letter: a header of float64
numbers (kind first) and payload tensors. Per shard ``s`` the payloads are flat tensors of that
shard's slice of the model (:class:`~crossover_sgd.algorithms.ps.shards.ShardLayout`):

=======  ==================  ======================================  ===================================
kind     from -> to          header after the kind                   payload
=======  ==================  ======================================  ===================================
PUSH     worker -> shard     push index, k, final, mean train loss,  G (raw: one flat tensor; quantized:
                             planned steps, empty                    packed indices + one norm per
                                                                     tensor), then the floating buffers;
                                                                     nothing when ``empty`` (k = 0)
REPLY    shard -> worker     round, updates n, global iterations,    raw: the slice x; quantized: n
                             server learning rate, digest of x       updates (packed + norms); then the
                             (quantized), the shard's elapsed s      averaged buffers
DONE     worker -> shard     (none)                                  (none): the worker's last letter
BYE      shard -> worker     rounds, global iterations, test         the workers lost on the way, if any
                             accuracy, test loss (shard 0's), the    (float64 ranks): the shard's last
                             number of workers lost                  letter
FETCH    worker -> shard     fetch index, state wanted (1: also the  (none): Downpour's request
                             shard's optimizer state, a checkpoint)
PARAMS   shard -> worker     fetch index, the shard's version        the slice x, then the buffers; with
                             (updates applied), global iterations,   the state: Adagrad's accumulator
                             the shard's elapsed s, accumulator      (when it has one), then the
                             follows (0/1), histogram length         staleness histogram (float64 counts)
SLICE    shard k -> shard 0  round                                   x and buffers of shard k (for the
                                                                     evaluation of the whole model);
                                                                     LAST_SLICE: the same, the last
=======  ==================  ======================================  ===================================

Sandblaster (coordinator ``c``, replicas, shards): ``OP`` c -> shard (an operation on the shard's
registers: header ``opcode, dst, a, b, scalar, evaluation``), ``SCALAR`` shard -> c (a dot product,
max or sum of the shard's part; after an evaluation's end, the count of portions missing, listed
in the payload), ``READY`` replica -> c (the batch size it sees), ``TASK`` c -> replica
(evaluation, portion, first and end sample), ``PORTION`` replica -> shard (evaluation, portion; the
gradient of the portion's summed loss), ``RESULT`` replica -> c (evaluation, portion, summed
loss), ``EPOCH`` c -> replica (evaluate the model now), ``STOP`` c -> all (its last letter).

A Downpour push carries, after the kind's fields above, the shard's version at the fetch its
first step was computed on (header[7]).

``G`` is the sum of the worker's raw local gradients since its previous push (k steps). A push
with ``final`` set ends the worker's *segment* (the training loop's synchronisation before an
evaluation or a checkpoint): the shard answers it when every worker's segment has ended, with the
model every worker then takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from crossover_sgd.algorithms.ps.shards import ShardLayout
from crossover_sgd.comm.quantize import packed_nbytes

__all__ = ["PUSH", "REPLY", "DONE", "BYE", "SLICE", "LAST_SLICE", "FETCH", "PARAMS", "OP", "SCALAR", "TASK",
           "RESULT", "PORTION", "EPOCH", "STOP", "READY", "LAST_KINDS", "Wire"]

PUSH, REPLY, DONE, BYE, SLICE, LAST_SLICE, FETCH, PARAMS = 1, 2, 3, 4, 5, 6, 7, 8
#: Sandblaster's letters (:mod:`crossover_sgd.algorithms.distbelief.sandblaster`).
OP, SCALAR, TASK, RESULT, PORTION, EPOCH, STOP, READY = 9, 10, 11, 12, 13, 14, 15, 16
#: The last letter on a link: a worker's DONE, a shard's BYE, a shard's last SLICE to shard 0, a
#: coordinator's STOP.
LAST_KINDS = (DONE, BYE, LAST_SLICE, STOP)


@dataclass(frozen=True)
class Wire:
    """The payload shapes of one run: the layout, the dtype, and the bit width (None: raw)."""

    layout: ShardLayout
    dtype: torch.dtype
    bits: Optional[int] = None

    def update(self, shard: int) -> List[torch.Tensor]:
        """One gradient sum or model update of ``shard``: raw, or packed indices and norms."""
        n = self.layout.numel(shard)
        if self.bits is None:
            return [torch.empty(n, dtype=self.dtype)]
        return [torch.empty(packed_nbytes(n, self.bits), dtype=torch.uint8),
                torch.empty(len(self.layout.param_sizes[shard]), dtype=self.dtype)]

    def buffers(self, shard: int) -> List[torch.Tensor]:
        n = self.layout.buffer_numel(shard)
        return [torch.empty(n, dtype=self.dtype)] if n else []

    def model(self, shard: int) -> List[torch.Tensor]:
        """The slice itself (a raw reply, a SLICE letter): parameters, then buffers."""
        return [torch.empty(self.layout.numel(shard), dtype=self.dtype)] + self.buffers(shard)

    def push(self, shard: int, header: List[float]) -> List[torch.Tensor]:
        if header[6]:  # empty
            return []
        return self.update(shard) + self.buffers(shard)

    def reply(self, shard: int, header: List[float]) -> List[torch.Tensor]:
        if self.bits is None:
            return self.model(shard)
        return [t for _ in range(int(header[2])) for t in self.update(shard)] + self.buffers(shard)

    def payload(self, shard: int, header: List[float]) -> List[torch.Tensor]:
        """What a letter with ``header`` carries (both directions: the kind decides)."""
        kind = int(header[0])
        if kind == PUSH:
            return self.push(shard, header)
        if kind == REPLY:
            return self.reply(shard, header)
        if kind in (SLICE, LAST_SLICE):
            return self.model(shard)
        if kind == PARAMS:  # with a Downpour shard's state: its accumulator and staleness histogram
            state = [torch.empty(self.layout.numel(shard), dtype=self.dtype)] if header[5] else []
            counts = [torch.empty(int(header[6]), dtype=torch.float64)] if header[6] else []
            return self.model(shard) + state + counts
        if kind == PORTION:
            return self.update(shard)
        if kind == SCALAR and header[2]:
            return [torch.empty(int(header[2]), dtype=torch.float64)]
        if kind == BYE and len(header) > 5 and header[5]:
            return [torch.empty(int(header[5]), dtype=torch.float64)]
        return []
