"""A server shard of Sandblaster L-BFGS: registers of vectors, operated on by the coordinator.

The shard keeps named vectors of its slice (*registers*: ``x`` is register 0, the parameters;
the gradients, the direction, the L-BFGS history ``y_i``/``s_i`` and line-search brackets are the
others) and does what the coordinator's ``OP`` letters say, in the order they arrive (one link
delivers in order): copy, scale, subtract, axpy, free, and the dot product, largest magnitude or
sum of magnitudes of its part, answered with a ``SCALAR`` (the coordinator combines the shards').

An *evaluation* ``e`` of the loss at ``w = x + t d`` (``EVAL_BEGIN``): the shard computes ``w`` its
part, serves it to replicas that fetch it, and keeps the first gradient of each portion that
replicas send (a backup's duplicate is discarded). At ``EVAL_END`` it sums the portions in
portion order (the same sum whatever replica sent which, and whatever order they came in) and
divides by the batch size into the destination register; a portion still missing after
``--timeout`` seconds (its replica died after reporting it) is named in the answer, and the
coordinator has it computed again. Letters of a later evaluation are held until it begins.
"""

from __future__ import annotations

import time
from typing import Dict, List, Set

import torch

from crossover_sgd.algorithms.ps.protocol import DONE, FETCH, OP, PARAMS, PORTION, SCALAR, STOP
from crossover_sgd.algorithms.ps.shard import ShardServer
from crossover_sgd.comm.mailbox import Letter, LostPeer

__all__ = ["SandblasterShard", "OPCODES"]

#: The register operations (header[1] of an OP letter).
OPCODES = {"copy": 1, "scaled": 2, "sub": 3, "axpy": 4, "dot": 5, "max_abs": 6, "sum_abs": 7, "free": 8,
           "eval_begin": 9, "eval_end": 10}
_CODE = {v: k for k, v in OPCODES.items()}
AT_X = -1  # EVAL_BEGIN's direction register for an evaluation at x itself
#: The kinds of letter the serving loop takes (from the coordinator and the replicas).
_SERVED = (OP, STOP, FETCH, PORTION, DONE)


class SandblasterShard(ShardServer):
    """Sandblaster's shard; see the module docstring."""

    #: a row per evaluation of the batch's loss and gradient (``round``: evaluations so far)
    columns = ("round", "evaluation", "portions", "duplicates", "elapsed_s")

    def serve(self) -> None:
        self.registers: Dict[int, torch.Tensor] = {0: self.x}
        self.evaluation = 0
        self.point = self.x
        self.portions: Dict[int, torch.Tensor] = {}
        self.duplicates = 0
        self.lost: List[int] = []
        coordinator = self.algorithm.extra_ranks()[0]
        done: Set[int] = set()
        stopped = False
        while not stopped or len(done) + len(self.lost) < len(self.workers):
            try:
                # after the coordinator's STOP: the replicas' DONE (a frozen one is dropped for its silence)
                waiting = [w for w in self.workers if w not in done and w not in self.lost] if stopped else [coordinator]
                letter = self.mailbox.receive(waiting, "command", self._current, patient=True)
            except LostPeer as exc:
                if exc.peer not in self.workers:
                    raise  # the coordinator or shard 0: the run cannot go on
                self.lost.append(exc.peer)
                continue
            if letter.kind == OP:
                self._operate(letter)
            elif letter.kind == STOP:
                stopped = True
            elif letter.kind == FETCH:
                point = self.x if letter.header[1] < 0 else self.point
                self.mailbox.send(letter.peer, [PARAMS, letter.header[1], self.rounds, self.iterations, self.elapsed()],
                                  [point.clone()] + ([self.b.clone()] if self.b.numel() else []))
            elif letter.kind == PORTION:
                portion = int(letter.header[2])
                if portion in self.portions or int(letter.header[1]) != self.evaluation:  # a backup's, or late
                    self.duplicates += 1
                else:
                    self.portions[portion] = letter.tensors[0]
            elif letter.kind == DONE:
                done.add(letter.peer)

    def _current(self, letter: Letter) -> bool:
        """The letters the serving loop handles, except those of an evaluation that has not begun
        here yet. Any other letter waits for its own reader: shard 1's model slice for the final
        evaluation can arrive while shard 0 still waits for a replica's DONE, and taken here it
        would be lost and shard 0's final evaluation would wait for it forever."""
        if letter.kind not in _SERVED:
            return False
        return not (letter.kind in (FETCH, PORTION) and letter.header[1] > self.evaluation)

    def _operate(self, letter: Letter) -> None:
        _, code, dst, a, b, scalar, evaluation, extra = letter.header
        op, regs = _CODE[int(code)], self.registers
        dst, a, b = int(dst), int(a), int(b)
        if op == "copy":
            regs[dst] = regs[a].clone()
        elif op == "scaled":
            regs[dst] = torch.mul(regs[a], scalar)
        elif op == "sub":
            regs[dst] = regs[a].sub(regs[b])
        elif op == "axpy":
            regs[dst].add_(regs[a], alpha=scalar)  # x moves in place: register 0 stays the slice
        elif op == "free":
            regs.pop(dst, None)
        elif op in ("dot", "max_abs", "sum_abs"):
            value = (regs[a].dot(regs[b]) if op == "dot" else regs[a].abs().max() if regs[a].numel() and
                     op == "max_abs" else regs[a].abs().sum() if op == "sum_abs" else torch.zeros(()))
            self.mailbox.send(letter.peer, [SCALAR, float(value), 0])
        elif op == "eval_begin":
            self.evaluation = int(evaluation)
            self.point = self.x if b == AT_X else self.x.clone().add_(regs[b], alpha=scalar)
            self.portions = {}
            self.began = time.perf_counter()
        elif op == "eval_end":
            self._end_evaluation(letter.peer, dst, int(a), scalar)

    def _end_evaluation(self, coordinator: int, dst: int, count: int, batch: float) -> None:
        """Sum the portions in order into ``dst`` (divided by the batch size), or name those missing."""
        deadline = time.monotonic() + self.algorithm.config.timeout
        while len(self.portions) < count and time.monotonic() < deadline:
            letter = self.mailbox.poll(lambda l: l.kind == PORTION and l.header[1] == self.evaluation)
            if letter is None:
                time.sleep(0.002)
            elif int(letter.header[2]) in self.portions:
                self.duplicates += 1
            else:
                self.portions[int(letter.header[2])] = letter.tensors[0]
        missing = [p for p in range(count) if p not in self.portions]
        if not missing:
            total = self.portions[0].clone()
            for p in range(1, count):
                total.add_(self.portions[p])
            self.registers[dst] = total.div_(batch)
            self.rounds += 1
            self.rows.append({"round": self.rounds, "evaluation": self.evaluation, "portions": count,
                              "duplicates": self.duplicates, "elapsed_s": self.elapsed()})
        self.mailbox.send(coordinator, [SCALAR, 0.0, len(missing)],
                          [torch.tensor(missing, dtype=torch.float64)] if missing else [])

    def lost_workers(self) -> List[int]:
        return list(self.lost)

    def extra_summary(self) -> Dict[str, object]:
        return {"evaluations": self.rounds, "duplicates_discarded": self.duplicates, "lost_replicas": list(self.lost)}
