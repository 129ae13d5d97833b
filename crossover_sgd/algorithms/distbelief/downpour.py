"""Downpour SGD (Dean et al., NIPS 2012): asynchronous replicas around the sharded server.

Every ``--n-fetch`` steps a replica fetches the parameters from every shard (and once before its
first step); it trains locally (the run's optimizer and ``--lr``) and every ``--n-push`` steps
pushes the sum of its raw gradients since its last push. Each shard applies a push to its slice
as soon as it arrives (:class:`~crossover_sgd.algorithms.distbelief.async_shard.AsyncShard`), with
SGD or Adagrad per coordinate (``--ps-optimizer``), no barrier and no consistency between
replicas. The *staleness* of an applied push is the number of updates the shard applied between
the fetch the gradient was computed on and this one.

``--warmstart-steps W``: the first replica trains alone until it has pushed W steps (the others
wait at their first fetch), as the paper warm-started its Adagrad runs.

A checkpoint (after :meth:`Downpour.flush`) of the first replica also holds every shard's state
(its slice, counters, Adagrad accumulator and staleness histogram, fetched with the model): a
resumed run's shards start from it, so a run of one replica resumed after a stop equals the
uninterrupted run; with several, the replicas' order of pushes after the resume is the machine's.

Replicas are independent (no collective over them: ``group_collectives = False``): a replica that
dies or freezes is dropped by the shards and the others finish (the local launcher lets them); a
lost shard ends every replica with a line naming it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Dict

import torch

from crossover_sgd.algorithms.options import option
from crossover_sgd.algorithms.ps.family import ServerFamily, ServerOptions
from crossover_sgd.algorithms.ps.protocol import FETCH, PARAMS, PUSH
from crossover_sgd.algorithms.ps.state import flat_views

__all__ = ["Downpour", "DownpourOptions", "REPLICA_COLUMNS"]

#: A replica's row per push: ``fetches`` and ``fetch_wait_s`` (the time it spent blocked in
#: fetches: its communication time; pushes never block) since the run's start, like ``train_s``.
REPLICA_COLUMNS = ("push", "k", "train_loss", "fetches", "fetch_wait_s", "train_s", "bytes_sent", "bytes_recv",
                   "elapsed_s")


@dataclass
class DownpourOptions(ServerOptions):
    n_fetch: int = option(1, "downpour: fetch the parameters from the shards every N steps", minimum=1, metavar="N")
    n_push: int = option(1, "downpour: push the accumulated gradient every N steps", minimum=1, metavar="N")
    ps_optimizer: str = option("sgd", "downpour: the shards' optimizer (adagrad: per coordinate, as the paper)",
                               choices=("sgd", "adagrad"))
    warmstart_steps: int = option(0, "downpour: the first replica trains this many steps alone before the others "
                                     "start", minimum=0, metavar="STEPS")


class Downpour(ServerFamily):
    """Downpour SGD; see the module docstring."""

    name = "downpour"
    worker_word = "replica"
    options_class: ClassVar = DownpourOptions
    group_collectives = False
    metric_columns = {"ps_pushes": float("nan"), "ps_fetches": float("nan")}

    @property
    def server_class(self) -> Any:
        from crossover_sgd.algorithms.distbelief.async_shard import AsyncShard

        return AsyncShard

    @classmethod
    def tolerates_lost_peers(cls, options: DownpourOptions) -> bool:
        return True

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().prepare(model)
        self.connect(model, columns=REPLICA_COLUMNS)
        self.fetches = 0
        self.fetch_wait_s = 0.0
        self.since_push = 0
        self.version = {s: 0 for s in self.shards}  # of each shard, at this replica's last fetch
        self.pushed_version = dict(self.version)  # at the fetch before the oldest step of the next push
        return model

    def training_started(self) -> None:
        self.fetch()  # every replica starts from the shards' model (a warm start waits here)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.since_push += 1
        if self.since_push >= self.options.n_push:
            self.push()
        if self.steps % self.options.n_fetch == 0:
            self.fetch()

    def flush(self) -> None:
        """Before an evaluation or a checkpoint: push what is accumulated and fetch the model."""
        if self.since_push:
            self.push()
        if self.training:
            self.fetch()

    def push(self) -> None:
        k = self.since_push
        loss = self.take_loss()
        for s in self.shards:
            tensors = [self.g[s].detach().to("cpu", copy=True)] + self.buffer_payload(s)
            self.mailbox.send(s, [PUSH, self.pushes, k, 0, loss, self.planned, 0, self.pushed_version[s]], tensors)
            self.g[s].zero_()
        self.pushed_version = dict(self.version)
        self.pushes += 1
        self.k_total += k
        self.since_push = 0
        if self.rows is not None:
            self.rows.append({"push": self.pushes - 1, "k": k, "train_loss": loss, "fetches": self.fetches,
                              "fetch_wait_s": self.fetch_wait_s, "train_s": self.elapsed() - self.wait_s,
                              "bytes_sent": self.comm.bytes_sent, "bytes_recv": self.comm.bytes_recv,
                              "elapsed_s": self.elapsed()})

    def fetch(self) -> None:
        """The shards' current parameters (blocking): the pushes sent before are applied first
        (one link delivers in order)."""
        waited = time.perf_counter()
        for s in self.shards:
            self.mailbox.send(s, [FETCH, self.fetches])
        with torch.no_grad():
            for s in self.shards:
                letter = self.mailbox.receive([s], "fetch reply", lambda l, s=s: l.peer == s and l.kind == PARAMS,
                                              patient=True)
                self.version[s] = int(letter.header[2])
                x, *buffers = letter.tensors
                self.x[s].copy_(x)
                if self.mine[s]:
                    torch._foreach_copy_(self.mine[s], flat_views(x, self.mine[s]))
                if buffers:
                    torch._foreach_copy_(self.my_buffers[s], flat_views(buffers[0], self.my_buffers[s]))
        if self.since_push == 0:
            self.pushed_version = dict(self.version)
        wait = time.perf_counter() - waited
        self.wait_s += wait
        self.fetch_wait_s += wait
        self.fetches += 1

    def shard_states(self) -> Dict[int, Dict[str, Any]]:
        """Every shard's state now (a fetch that asks for it; the model is left as it is)."""
        for s in self.shards:
            self.mailbox.send(s, [FETCH, self.fetches, 1])
        states = {}
        for s in self.shards:
            letter = self.mailbox.receive([s], "state reply", lambda l, s=s: l.peer == s and l.kind == PARAMS,
                                          patient=True)
            x, *rest = letter.tensors
            if self.my_buffers[s]:
                rest.pop(0)  # the buffers (the model holds them)
            accumulator = rest.pop(0) if letter.header[5] else None
            counts = rest.pop(0).tolist() if letter.header[6] else []
            states[s] = {"x": x, "accumulator": accumulator, "staleness": counts,
                         "rounds": int(letter.header[2]), "iterations": int(letter.header[3])}
            if s == 0:
                self.server_clock = {"rounds": int(letter.header[2]), "iterations": int(letter.header[3]),
                                     "elapsed_s": float(letter.header[4])}
        return states

    def state_dict(self) -> Dict[str, Any]:
        """Taken after :meth:`flush`; the first replica's (the one a resumed run's shards read)
        holds every shard's state (``server_clock["shards"]``)."""
        shards = self.shard_states() if self.ctx.rank == self.ctx.trainers[0] else None
        state = {**super().state_dict(), "fetches": self.fetches, "fetch_wait_s": self.fetch_wait_s}
        if shards is not None:
            state["server_clock"] = {**state["server_clock"], "shards": shards}
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fetches, self.fetch_wait_s = int(state["fetches"]), float(state["fetch_wait_s"])
        self.server_clock.pop("shards", None)

    def metrics(self) -> Dict[str, float]:
        return {"ps_pushes": float(self.pushes), "ps_fetches": float(self.fetches)}

    def summary(self) -> Dict[str, Any]:
        steps_s = self.steps / max(self.elapsed(), 1e-9)
        return {**super().summary(), "fetches": self.fetches, "steps_per_s": round(steps_s, 3)}
