"""The server shard of the parameter-server family: synchronous rounds.

The loop takes letters in arrival order (:class:`~crossover_sgd.comm.mailbox.Mailbox`) and keeps
the state of a *round*: the workers still in the segment (``active``), their pushes so far, and
the workers whose final push is in. When every active worker has pushed, the shard aggregates::

    x = x - lr_ps * (G_1 + ... + G_m) / m        (m: the pushes with k > 0, summed in rank order)

(quantized, DQLOSP: the update ``d = lr_ps * mean`` is quantized once, sent as is, and the shard
applies exactly what it sends, ``x = x - dequantize(q(d))``, so every worker's copy stays
bit-identical to ``x``; each reply carries the digest of ``x`` and workers check it). The
floating buffers (BatchNorm statistics) are averaged. It replies to the pushes that were not
final; when no worker is left in the segment, to the final ones, with the model (quantized: the
updates each has not seen yet). The counters (rounds, global iterations = the sum of every k)
advance identically on every shard, since every shard gets every push. What every shard loop
shares (the slice, evaluation, records, the end) is :class:`~crossover_sgd.algorithms.ps.shard.ShardServer`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set

import torch

from crossover_sgd.algorithms.ps.protocol import DONE, PUSH, REPLY
from crossover_sgd.algorithms.ps.records import SHARD_COLUMNS, scheduled
from crossover_sgd.algorithms.ps.shard import ShardServer
from crossover_sgd.algorithms.ps.state import state_digest
from crossover_sgd.comm.mailbox import Letter
from crossover_sgd.comm.quantize import dequantize, quantize

__all__ = ["SyncShard"]


class SyncShard(ShardServer):
    """A shard of localSGD, OSP, LOSP, DQLOSP: see the module docstring."""

    columns = SHARD_COLUMNS

    def serve(self) -> None:
        self._digest = (-1, 0)  # (round, digest of x after it)
        done: Set[int] = set()
        active = list(self.workers)  # in the segment, not final yet
        finals: List[int] = []  # final pushes waiting for the segment's end
        pushes: Dict[int, Letter] = {}
        history: List[List[torch.Tensor]] = []  # quantized updates of this segment
        seen: Dict[int, int] = {w: 0 for w in self.workers}  # updates of history each worker has
        while len(done) < len(self.workers):
            missing = [w for w in active if w not in pushes]
            letter = self.mailbox.receive(missing or [w for w in self.workers if w not in done], "push",
                                          lambda l: l.kind in (PUSH, DONE))
            if letter.kind == DONE:
                if letter.peer in pushes or letter.peer in finals:
                    raise RuntimeError(f"{self.mailbox.name(letter.peer)} ended inside a segment (a bug)")
                done.add(letter.peer)
                active = [w for w in active if w != letter.peer]
            else:
                if letter.peer in pushes or letter.peer not in active:
                    raise RuntimeError(f"{self.mailbox.name(letter.peer)} pushed twice in a round (a bug)")
                pushes[letter.peer] = letter
                self.planned[letter.peer] = int(letter.header[5])
            if not pushes or len(pushes) < len(active):
                continue
            rounds = self.rounds
            update = self._aggregate([pushes[w] for w in sorted(pushes)])
            if update is not None:
                history.append(update)
            pushes_in_round = [pushes[w] for w in sorted(pushes)]
            ended = [w for w in sorted(pushes) if pushes[w].header[3]]
            for w in sorted(pushes):
                if w not in ended:
                    self._reply(w, history, seen)
            finals += ended
            active = [w for w in active if w not in ended]
            pushes = {}
            if not active:  # the segment ends: every worker takes the same model
                for w in sorted(finals):
                    self._reply(w, history, seen)
                finals, history = [], []
                seen = {w: 0 for w in self.workers}
                active = [w for w in self.workers if w not in done]
            if self.rounds > rounds:
                self._record(pushes_in_round)

    # ----------------------------------------------------------------------------- one round
    def _aggregate(self, letters: List[Letter]) -> Optional[List[torch.Tensor]]:
        """Apply the round's pushes (in rank order); return the quantized update sent (DQLOSP)."""
        contributing = [l for l in letters if int(l.header[2]) > 0]
        self.iterations += sum(int(l.header[2]) for l in letters)
        if not contributing:
            return None
        self.rounds += 1
        total_planned = sum(self.planned.values())
        self.lr_now = scheduled(self.lr, self.lr_schedule,
                                (self.iterations - sum(int(l.header[2]) for l in letters)) / max(total_planned, 1))
        grads = [self._gradient(l) for l in contributing]
        mean = grads[0].clone()
        for g in grads[1:]:
            mean.add_(g)
        mean.div_(len(grads))
        update: Optional[List[torch.Tensor]] = None
        if self.wire.bits is None:
            self.x.sub_(mean, alpha=self.lr_now)
        else:
            sizes = self.wire.layout.param_sizes[self.shard]
            d = mean.mul_(self.lr_now)
            seeds = self.algorithm.seeds(-1, self.rounds, self.shard)
            packed, norms = quantize(d, sizes, self.wire.bits, stochastic=self.algorithm.stochastic(), seeds=seeds)
            self.x.sub_(dequantize(packed, norms, sizes, self.wire.bits))
            update = [packed, norms]
        if self.b.numel():
            buffers = [l.tensors[-1] for l in contributing]
            self.b.copy_(torch.stack(buffers).mean(0))
        return update

    def _gradient(self, letter: Letter) -> torch.Tensor:
        if self.wire.bits is None:
            return letter.tensors[0]
        packed, norms = letter.tensors[0], letter.tensors[1]
        return dequantize(packed, norms, self.wire.layout.param_sizes[self.shard], self.wire.bits)

    def _reply(self, worker: int, history: List[List[torch.Tensor]], seen: Dict[int, int]) -> None:
        if self.wire.bits is None:
            tensors = [self.x.clone()]
            n = 0
        else:
            updates = history[seen[worker]:]
            seen[worker] = len(history)
            tensors = [t for u in updates for t in u]
            n = len(updates)
        if self.b.numel():
            tensors.append(self.b.clone())
        if self.wire.bits is not None and self._digest[0] != self.rounds:
            self._digest = (self.rounds, state_digest(self.x))
        self.mailbox.send(worker, [REPLY, self.rounds, n, self.iterations, self.lr_now, self._digest[1], self.elapsed()],
                          tensors)

    # ----------------------------------------------------------------------------- records
    def _record(self, letters: List[Letter]) -> None:
        result = self._evaluate(force=False)
        if self.rows is not None:
            self.rows.append({"round": self.rounds, "global_iterations": self.iterations,
                              "pushes": sum(1 for l in letters if l.header[2] > 0),
                              "k_sum": sum(int(l.header[2]) for l in letters),
                              "lr_ps": self.lr_now, "test_loss": result.get("val_loss", float("nan")),
                              "test_acc": result.get("val_acc", float("nan")), "bytes_recv": self.algorithm.comm.bytes_recv,
                              "bytes_sent": self.algorithm.comm.bytes_sent,
                              "elapsed_s": self.elapsed()})
