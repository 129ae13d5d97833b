"""Sandblaster's coordinator: batch L-BFGS over vectors that live on the shards, and the portions.

The coordinator holds no parameters. It runs :func:`~crossover_sgd.algorithms.distbelief.lbfgs.lbfgs_step`
(``torch.optim.LBFGS``'s logic, scalars only) on a :class:`ShardedSpace`: every vector operation is
an ``OP`` letter to every shard, a dot product or a norm the sum (or max) of the shards' answers.
An evaluation of the loss and gradient at ``x + t d`` splits the batch (the first ``B`` training
samples, in order) into portions of ``--portion-size`` samples handed to replicas one at a time, as
each reports its last (fast replicas take more; a straggler is kept off the last portions). When
every portion is out but some are still being computed, an idle replica gets a copy of the oldest
one whose copies are slower or stalled (a *backup*; the rules and the measured times:
:mod:`~crossover_sgd.algorithms.distbelief.portions`): the first result wins, the shards keep the
first gradient of each portion, and every sum runs in portion order, so backups never change the
result. A replica that dies or stays silent without a heartbeat is dropped and its
portions handed to others. Per L-BFGS iteration it records the loss, the step length, the
evaluations, portions and backups (``ps/coordinator.csv``); per replica the portions it computed
first (counted) and every result it delivered (duplicates included), and the replicas slowed on
purpose (``ps/coordinator.json``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import Any, Deque, Dict, List, Optional

import torch

from crossover_sgd.algorithms.distbelief.lbfgs import LBFGSOptions, LBFGSState, X, lbfgs_step
from crossover_sgd.algorithms.distbelief.portions import PortionTimes
from crossover_sgd.algorithms.distbelief.sandblaster_shard import AT_X, OPCODES
from crossover_sgd.algorithms.ps.protocol import DONE, EPOCH, LAST_KINDS, OP, READY, RESULT, SCALAR, STOP, TASK
from crossover_sgd.algorithms.ps.records import RowLog
from crossover_sgd.algorithms.ps.state import ps_groups
from crossover_sgd.atomic import atomic_write_json
from crossover_sgd.comm.mailbox import Letter, LostPeer, Mailbox
from crossover_sgd.errors import PeerError

__all__ = ["Coordinator", "COORDINATOR_COLUMNS"]

log = logging.getLogger(__name__)

#: With replicas kept idle, how often the coordinator looks again whether one should take a copy.
RECHECK_S = 0.05

COORDINATOR_COLUMNS = ("iteration", "loss", "t", "func_evals", "ls_evals", "portions", "backups", "duplicates",
                       "elapsed_s")


class Coordinator:
    """The coordinator rank of ``algorithm`` (a :class:`~crossover_sgd.algorithms.distbelief.sandblaster.Sandblaster`)."""

    def __init__(self, algorithm: Any):
        self.algorithm = algorithm
        ctx, config, opts = algorithm.ctx, algorithm.config, algorithm.options
        self.shards = list(range(opts.ps_shards))
        self.replicas = list(ctx.trainers)
        groups = ps_groups(opts.ps_shards, self.replicas, ctx.rank, timeout_s=86_400.0, extra=algorithm.extra_ranks())
        self.mailbox = Mailbox(ctx.rank, groups, self._payload, stats=algorithm.comm, last_kinds=LAST_KINDS,
                               names=algorithm.names(), timeout_s=config.timeout, liveness=algorithm.liveness())
        self.ids: Dict[str, int] = {X: 0}
        self.evaluation = 0
        self.batch = 0
        self.idle: Deque[int] = deque()
        self.lost: List[int] = []
        self.portions_by: Counter = Counter()  # first results: the portions counted
        self.results_by: Counter = Counter()  # every result received, duplicates included (records)
        self.backups = self.duplicates = self.portions_done = 0
        self.times = PortionTimes()
        self.started = time.perf_counter()

    @staticmethod
    def _payload(peer: int, header: List[float]) -> List[torch.Tensor]:
        if int(header[0]) == SCALAR and header[2]:
            return [torch.empty(int(header[2]), dtype=torch.float64)]
        return []

    # ----------------------------------------------------------------------------- the run
    def run(self, env: Any) -> Dict[str, Any]:
        opts, config = self.algorithm.options, self.algorithm.config
        self.rows = RowLog(env.out / "ps" / "coordinator.csv", COORDINATOR_COLUMNS)
        while not self.batch:  # every replica says READY with the batch it sees; the first tells B
            letter = self._next()
            if letter is not None and letter.kind == READY:
                self.batch = int(letter.header[1])
                self.idle.append(letter.peer)
        self.count = -(-self.batch // opts.portion_size)
        lbfgs = LBFGSOptions(lr=opts.lbfgs_lr, max_iter=opts.lbfgs_max_iter, history_size=opts.history_size,
                             line_search_fn=None if opts.line_search == "none" else opts.line_search)
        state = LBFGSState()
        space = ShardedSpace(self)
        self.iteration_portions = self.iteration_backups = 0
        losses = []
        for epoch in range(config.epochs):
            losses.append(lbfgs_step(space, state, lbfgs, on_iteration=self._record))
            self._epoch_end(epoch + 1)
        for peer in self.shards + self._live():
            self.mailbox.send(peer, [STOP])
        self.mailbox.wait_sent(timeout=config.timeout)
        self.rows.close()
        summary = {"role": "coordinator", "rank": self.algorithm.ctx.rank, "batch": self.batch, "portions": self.count,
                   "iterations": state.n_iter, "func_evals": state.func_evals, "losses": losses,
                   "portions_by_replica": {str(r): self.portions_by[r] for r in self.replicas},
                   "results_by_replica": {str(r): self.results_by[r] for r in self.replicas},
                   "slow_replicas": self._slow_replicas(),
                   "backups": self.backups, "duplicates": self.duplicates, "lost_replicas": list(self.lost),
                   "comm": self.algorithm.comm.as_dict(), "wall_time_s": round(time.perf_counter() - self.started, 3)}
        atomic_write_json(env.out / "ps" / "coordinator.json", summary)
        return summary

    def _slow_replicas(self) -> Dict[str, float]:
        """For the records: the replicas slowed on purpose (``--slow-replicas``, training ranks),
        by rank, with their ``--slow-factor``."""
        opts = self.algorithm.options
        named = [r.strip() for r in (opts.slow_replicas or "").split(",")]
        slow = {int(r) for r in named if r.isdigit()}  # (the replicas refuse anything else at the start)
        if not opts.slow_factor:
            return {}
        return {str(r): float(opts.slow_factor) for i, r in enumerate(self.replicas) if i in slow}

    def _epoch_end(self, epoch: int) -> None:
        """Every replica evaluates the model now; the coordinator waits for them (x must not move
        meanwhile)."""
        self.idle.clear()
        for r in self._live():
            self.mailbox.send(r, [EPOCH, epoch])
        while any(r not in self.idle for r in self._live()):
            letter = self._next()
            if letter is not None and letter.kind == READY:
                self.idle.append(letter.peer)

    def _live(self) -> List[int]:
        return [r for r in self.replicas if r not in self.lost]

    def _record(self, info: Dict[str, Any]) -> None:
        self.rows.append({"iteration": info["n_iter"], "loss": info["loss"], "t": info["t"],
                          "func_evals": info["func_evals"], "ls_evals": info["ls_evals"],
                          "portions": self.iteration_portions, "backups": self.iteration_backups,
                          "duplicates": self.duplicates, "elapsed_s": time.perf_counter() - self.started})
        self.iteration_portions = self.iteration_backups = 0

    def _next(self, waiting_for: Optional[List[int]] = None, within: Optional[float] = None) -> Optional[Letter]:
        """The next letter from a replica (None when one was just dropped, or none came ``within``
        seconds)."""
        try:
            return self.mailbox.receive(self._live() if waiting_for is None else waiting_for, "replica's letter",
                                        lambda l: l.kind in (READY, RESULT, DONE), patient=True, within=within)
        except LostPeer as exc:
            if exc.peer not in self.replicas:
                raise
            self.lost.append(exc.peer)
            log.warning("coordinator: %s: dropped; %d replica(s) go on", exc, len(self._live()))
            if not self._live():
                raise PeerError("every replica was lost: the batch cannot be computed") from exc
            return None

    # ----------------------------------------------------------------------------- the shards
    def command(self, op: str, dst: int = 0, a: int = 0, b: int = 0, scalar: float = 0.0, extra: float = 0.0) -> None:
        for s in self.shards:
            self.mailbox.send(s, [OP, OPCODES[op], dst, a, b, scalar, self.evaluation, extra])

    def answers(self) -> List[Letter]:
        return [self.mailbox.receive([s], "shard's answer", lambda l, s=s: l.peer == s and l.kind == SCALAR,
                                     patient=True) for s in self.shards]

    def register(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = max(self.ids.values()) + 1
        return self.ids[name]

    # ----------------------------------------------------------------------------- an evaluation
    def evaluate(self, t: float, d: Optional[str], dst: str) -> float:
        """The loss at ``x + t d`` (``d`` None: at ``x``), its gradient into ``dst`` on the shards."""
        self.evaluation += 1
        self.command("eval_begin", b=AT_X if d is None else self.ids[d], scalar=t)
        target = self.register(dst)
        losses: Dict[int, float] = {}
        todo = list(range(self.count))
        while todo:
            self._compute(todo, losses)
            self.command("eval_end", dst=target, a=self.count, scalar=float(self.batch))
            missing = sorted({int(p) for letter in self.answers() for t in letter.tensors for p in t.tolist()})
            for p in missing:  # reported to the coordinator, but their gradient never reached a shard
                losses.pop(p, None)
            todo = missing
        total = 0.0
        for p in range(self.count):
            total += losses[p]
        return total / self.batch

    def _compute(self, portions: List[int], losses: Dict[int, float]) -> None:
        """Have every portion of ``portions`` computed once (backups near the end)."""
        waiting: Deque[int] = deque(portions)
        running: Dict[int, List[int]] = {}  # portion -> replicas computing it, in order of assignment
        task: Dict[int, int] = {}  # replica -> its portion
        size = self.algorithm.options.portion_size
        while any(p not in losses for p in portions):
            kept: List[int] = []  # idle replicas that take nothing now (see portions.py)
            while self.idle:
                replica = self.idle.popleft()
                if replica in self.lost:
                    continue
                now = time.perf_counter()
                if waiting:
                    if not self.times.takes_new(replica, len(waiting), self._live()):
                        kept.append(replica)
                        continue
                    portion = waiting.popleft()
                else:  # every portion is out: a backup of the oldest one still running elsewhere, if worth it
                    candidates = [p for p in running if p not in losses and replica not in running[p]
                                  and self.times.backs_up(replica, running[p], now)]
                    if not candidates:
                        kept.append(replica)
                        continue
                    portion = candidates[0]
                    self.backups += 1
                    self.iteration_backups += 1
                running.setdefault(portion, []).append(replica)
                task[replica] = portion
                start = portion * size
                self.times.sent_to(replica, now)
                self.mailbox.send(replica, [TASK, self.evaluation, portion, start, min(start + size, self.batch)])
            self.idle.extend(kept)
            # replicas kept idle: look again soon (a copy becomes worth it when a holder is late)
            letter = self._next([r for r in task if r not in self.lost], within=RECHECK_S if kept else None)
            if letter is None:  # a replica was lost (its portions go back where no copy runs), or a pause
                for replica in list(task):
                    if replica in self.lost:
                        self.times.forget(replica)
                        portion = task.pop(replica)
                        running[portion] = [r for r in running[portion] if r != replica]
                        if portion not in losses and not running[portion]:
                            waiting.appendleft(portion)
                continue
            if letter.kind == DONE:
                continue
            self.idle.append(letter.peer)
            if letter.kind == READY:
                continue
            task.pop(letter.peer, None)
            self.times.result_from(letter.peer, time.perf_counter())
            evaluation, portion, loss = int(letter.header[1]), int(letter.header[2]), letter.header[3]
            self.results_by[letter.peer] += 1
            if evaluation != self.evaluation or portion in losses:
                self.duplicates += 1
                continue
            losses[portion] = loss
            self.portions_by[letter.peer] += 1
            self.portions_done += 1
            self.iteration_portions += 1


class ShardedSpace:
    """:class:`~crossover_sgd.algorithms.distbelief.lbfgs.VectorSpace` over the shards' registers."""

    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    def _id(self, name: str) -> int:
        return self.c.ids[name]

    def copy(self, dst: str, src: str) -> None:
        self.c.command("copy", dst=self.c.register(dst), a=self._id(src))

    def scaled(self, dst: str, src: str, a: float) -> None:
        self.c.command("scaled", dst=self.c.register(dst), a=self._id(src), scalar=float(a))

    def sub(self, dst: str, a: str, b: str) -> None:
        self.c.command("sub", dst=self.c.register(dst), a=self._id(a), b=self._id(b))

    def axpy(self, dst: str, alpha: float, src: str) -> None:
        self.c.command("axpy", dst=self._id(dst), a=self._id(src), scalar=float(alpha))

    def _reduce(self, op: str, a: str, b: Optional[str] = None) -> List[float]:
        self.c.command(op, a=self._id(a), b=self._id(b) if b is not None else 0)
        return [letter.header[1] for letter in self.c.answers()]

    def dot(self, a: str, b: str) -> float:
        total = 0.0
        for value in self._reduce("dot", a, b):  # shard order: the same sum on every run
            total += value
        return total

    def max_abs(self, a: str) -> float:
        return max(self._reduce("max_abs", a))

    def sum_abs(self, a: str) -> float:
        total = 0.0
        for value in self._reduce("sum_abs", a):
            total += value
        return total

    def free(self, *names: str) -> None:
        for name in names:
            if name in self.c.ids and name != X:
                self.c.command("free", dst=self.c.ids.pop(name))

    def evaluate(self, t: float, d: str, dst: str) -> float:
        return self.c.evaluate(float(t), d, dst)

    def evaluate_here(self, dst: str) -> float:
        return self.c.evaluate(0.0, None, dst)
