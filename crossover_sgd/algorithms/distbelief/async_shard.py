"""A server shard of Downpour SGD: every push is applied to the slice as it arrives.

The loop of :class:`~crossover_sgd.algorithms.ps.shard.ShardServer` taken letter by letter, with
no rounds: a FETCH is answered with the slice and its *version* (the number of updates applied so
far); a PUSH (the gradient sum G of k steps, and the version the replica fetched before its first
step in G) is applied at once by the shard's optimizer:

* ``sgd``: ``x = x - lr * G``;
* ``adagrad``: ``a = a + G * G; x = x - lr * G / (sqrt(a) + eps)`` per coordinate, with exactly
  the operations of ``torch.optim.Adagrad`` (eps 1e-10, no lr decay), so one replica pushing every
  step equals that optimizer bit for bit.

Its *staleness* is the version now minus the version it was computed on. A replica that dies or
stays silent without a heartbeat is dropped (logged, listed in the shard's summary) and the shard
goes on; it ends when every replica is done or lost. With ``--warmstart-steps W`` the shard keeps
the other replicas' first fetch waiting until the first replica has pushed W steps.

A FETCH that asks for the state (the first replica's, at a checkpoint) is answered with the
accumulator and the staleness histogram too: the checkpoint then holds the shard's whole state,
and a resumed shard (``clock["shards"][s]``) goes on from it exactly.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Dict, List, Optional, Set

import torch
from torch import nn

from crossover_sgd.algorithms.ps.protocol import DONE, FETCH, PARAMS, PUSH
from crossover_sgd.algorithms.ps.records import scheduled
from crossover_sgd.algorithms.ps.shard import ShardServer
from crossover_sgd.comm.mailbox import Letter, LostPeer

__all__ = ["AsyncShard", "ASYNC_SHARD_COLUMNS"]

log = logging.getLogger(__name__)

#: A Downpour shard's row per applied push (``round``: the updates applied so far, as the other
#: shards' rows count them; shard 0: the whole model's test accuracy every ``--ps-eval-every``).
ASYNC_SHARD_COLUMNS = ("round", "replica", "k", "staleness", "lr_ps", "global_iterations", "test_loss", "test_acc",
                       "bytes_recv", "bytes_sent", "elapsed_s")
ADAGRAD_EPS = 1e-10  # torch.optim.Adagrad's default


class AsyncShard(ShardServer):
    """Downpour's shard; see the module docstring."""

    columns = ASYNC_SHARD_COLUMNS

    def __init__(self, algorithm: Any, model: nn.Module, clock: Optional[Dict[str, Any]] = None):
        super().__init__(algorithm, model, clock)
        adagrad = algorithm.options.ps_optimizer == "adagrad"
        self.accumulator = torch.zeros_like(self.x) if adagrad else None
        self.staleness: Counter = Counter()
        saved = (clock or {}).get("shards", {}).get(self.shard)
        if saved is not None:  # a resumed run: the state the first replica's checkpoint took from this shard
            self.x.copy_(saved["x"])
            self.rounds, self.iterations = int(saved["rounds"]), int(saved["iterations"])
            if self.accumulator is not None:
                self.accumulator.copy_(saved["accumulator"])
            self.staleness.update({k: int(n) for k, n in enumerate(saved["staleness"]) if n})

    def serve(self) -> None:
        opts = self.algorithm.options
        self.lost: List[int] = []
        replicas = list(self.workers)
        first = replicas[0]
        warm = opts.warmstart_steps
        warm_pushed = self.iterations  # resumed after the warm start: it is over
        waiting: List[Letter] = []  # fetches held back until the warm start is over
        done: Set[int] = set()
        while len(done) + len(self.lost) < len(replicas):
            active = [r for r in replicas if r not in done and r not in self.lost]
            try:
                letter = self.mailbox.receive(active, "letter from a replica", lambda l: l.kind in (FETCH, PUSH, DONE),
                                              patient=True)
            except LostPeer as exc:
                if exc.peer not in replicas or exc.peer in done:
                    raise  # a shard (shard 0): the run cannot go on
                self._drop(exc.peer, str(exc))
                waiting = [w for w in waiting if w.peer != exc.peer]
                continue
            if letter.kind == DONE:
                done.add(letter.peer)
            elif letter.kind == FETCH:
                if warm and letter.peer != first and warm_pushed < warm:
                    waiting.append(letter)
                else:
                    self._answer(letter)
            else:
                self._apply(letter)
                if letter.peer == first:
                    warm_pushed += int(letter.header[2])
            if waiting and (warm_pushed >= warm or first in done or first in self.lost):
                for held in waiting:
                    self._answer(held)
                waiting = []

    def _answer(self, fetch: Letter) -> None:
        tensors = [self.x.clone()] + ([self.b.clone()] if self.b.numel() else [])
        header = [PARAMS, fetch.header[1], self.rounds, self.iterations, self.elapsed()]
        if fetch.header[2]:  # the state too (a checkpoint)
            counts = [float(self.staleness[k]) for k in range(max(self.staleness, default=-1) + 1)]
            header += [float(self.accumulator is not None), len(counts)]
            tensors += [self.accumulator.clone()] if self.accumulator is not None else []
            tensors += [torch.tensor(counts, dtype=torch.float64)] if counts else []
        self.mailbox.send(fetch.peer, header, tensors)

    def _apply(self, push: Letter) -> None:
        k = int(push.header[2])
        self.planned[push.peer] = int(push.header[5])
        g = push.tensors[0]
        progress = self.iterations / max(sum(self.planned.values()), 1)
        self.lr_now = scheduled(self.lr, self.lr_schedule, progress)
        if self.accumulator is None:
            self.x.sub_(g, alpha=self.lr_now)
        else:  # torch.optim.Adagrad's single-tensor update, operation for operation
            self.accumulator.addcmul_(g, g, value=1)
            std = self.accumulator.sqrt().add_(ADAGRAD_EPS)
            self.x.addcdiv_(g, std, value=-self.lr_now)
        if self.b.numel() and len(push.tensors) > 1:
            self.b.copy_(push.tensors[1])  # the latest replica's statistics
        staleness = self.rounds - int(push.header[7])
        self.staleness[staleness] += 1
        self.rounds += 1
        self.iterations += k
        result = self._evaluate(force=False)
        self.rows.append({"round": self.rounds, "replica": push.peer, "k": k, "staleness": staleness,
                          "lr_ps": self.lr_now, "global_iterations": self.iterations,
                          "test_loss": result.get("val_loss", float("nan")),
                          "test_acc": result.get("val_acc", float("nan")), "bytes_recv": self.algorithm.comm.bytes_recv,
                          "bytes_sent": self.algorithm.comm.bytes_sent, "elapsed_s": self.elapsed()})

    def _drop(self, replica: int, why: str) -> None:
        self.lost.append(replica)
        log.warning("server shard %d: %s: dropped; %d replica(s) go on", self.shard, why,
                    len(self.workers) - len(self.lost))

    def extra_summary(self) -> Dict[str, Any]:
        return {"updates": self.rounds, "lost_replicas": list(self.lost),
                "staleness_histogram": {str(k): v for k, v in sorted(self.staleness.items())},
                "optimizer": self.algorithm.options.ps_optimizer}

    def lost_workers(self) -> List[int]:
        return list(self.lost)
