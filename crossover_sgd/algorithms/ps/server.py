"""One server shard of the parameter-server family: its slice of the global model and its loop.

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
advance identically on every shard, since every shard gets every push.

Shard 0 evaluates the whole model every ``--ps-eval-every`` rounds and at the end (the other
shards send it their slices then) and writes ``ps/shard{s}.csv`` rows per round; every shard
writes ``ps/shard{s}.json`` at the end. A shard ends when every worker said it is done.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Set

import torch
from torch import nn

from crossover_sgd.algorithms.ps.state import flat_views, model_state, ps_groups, state_digest
from crossover_sgd.algorithms.ps.protocol import BYE, DONE, LAST_KINDS, LAST_SLICE, PUSH, REPLY, SLICE
from crossover_sgd.algorithms.ps.records import SHARD_COLUMNS, RowLog, scheduled
from crossover_sgd.atomic import atomic_write_json
from crossover_sgd.comm.mailbox import Letter, Mailbox
from crossover_sgd.comm.quantize import dequantize, quantize

__all__ = ["ShardServer"]

log = logging.getLogger(__name__)


class ShardServer:
    """Server shard ``ctx.rank`` of ``algorithm``'s run (a :class:`~crossover_sgd.algorithms.ps.base.PSAlgorithm`;
    ``model``: the run's initial model). Created where the trainers prepare (it joins the run's
    groups); :meth:`run` serves until every worker is done."""

    def __init__(self, algorithm: Any, model: nn.Module, clock: Optional[Dict[str, int]] = None):
        self.algorithm, self.model, self.env = algorithm, model, None
        ctx, config, opts = algorithm.ctx, algorithm.config, algorithm.options
        self.shard, self.shards = ctx.rank, opts.ps_shards
        self.workers = list(ctx.trainers)
        self.wire = algorithm.wire(model)
        layout = self.wire.layout
        self.params, self.buffers = model_state(model)
        self.mine = [self.params[i] for i in layout.params[self.shard]]
        self.my_buffers = [self.buffers[i] for i in layout.buffers[self.shard]]
        dtype = self.wire.dtype
        self.x = (torch.cat([p.detach().reshape(-1).cpu() for p in self.mine]) if self.mine
                  else torch.zeros(0, dtype=dtype))
        self.b = (torch.cat([b.detach().reshape(-1).cpu() for b in self.my_buffers]) if self.my_buffers
                  else torch.zeros(0, dtype=dtype))
        groups = ps_groups(self.shards, self.workers, ctx.rank, timeout_s=86_400.0)
        peers_shard = {peer: (peer if peer < self.shards else self.shard) for peer in groups}
        self.mailbox = Mailbox(ctx.rank, groups, lambda peer, header: self.wire.payload(peers_shard[peer], header),
                               stats=algorithm.comm, last_kinds=LAST_KINDS, names=algorithm.names(),
                               timeout_s=config.timeout, liveness=algorithm.liveness(), delay_s=opts.ps_delay)
        self.lr = opts.ps_lr if opts.ps_lr is not None else config.lr
        self.lr_now = self.lr
        self._digest = (-1, 0)  # (round, digest of x after it)
        self.rounds = clock["rounds"] if clock else 0  # resumed: the counters of the first worker's checkpoint
        self.iterations = clock["iterations"] if clock else 0
        self.elapsed_before = clock.get("elapsed_s", 0.0) if clock else 0.0
        self.planned: Dict[int, int] = {}
        self.started = time.perf_counter()
        self.rows: Optional[RowLog] = None
        self.final: Dict[str, float] = {"test_acc": float("nan"), "test_loss": float("nan")}

    # ----------------------------------------------------------------------------- the loop
    def run(self, env: Any) -> Dict[str, Any]:
        """Serve (``env``: the role's output folder and evaluation); return the shard's summary."""
        self.env = env
        self.rows = RowLog(env.out / "ps" / f"shard{self.shard}.csv", SHARD_COLUMNS,
                           append=self.algorithm.config.resume)
        self.started = time.perf_counter()
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
        self._evaluate(force=True)
        for w in self.workers:
            self.mailbox.send(w, [BYE, self.rounds, self.iterations, self.final["test_acc"], self.final["test_loss"]])
        if self.shard == 0:
            for s in range(1, self.shards):
                self.mailbox.send(s, [BYE])
        else:
            self.mailbox.receive([0], "goodbye", lambda l: l.peer == 0 and l.kind == BYE)
        self.mailbox.wait_sent(timeout=self.algorithm.config.timeout)
        return self._summary()

    # ----------------------------------------------------------------------------- one round
    def _aggregate(self, letters: List[Letter]) -> Optional[List[torch.Tensor]]:
        """Apply the round's pushes (in rank order); return the quantized update sent (DQLOSP)."""
        contributing = [l for l in letters if int(l.header[2]) > 0]
        self.iterations += sum(int(l.header[2]) for l in letters)
        if not contributing:
            return None
        self.rounds += 1
        total_planned = sum(self.planned.values())
        self.lr_now = scheduled(self.lr, self.algorithm.options.ps_lr_schedule,
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

    def elapsed(self) -> float:
        """Seconds since the shard started serving (resumed: since the run's start)."""
        return self.elapsed_before + time.perf_counter() - self.started

    def _evaluate(self, force: bool) -> Dict[str, float]:
        """Shard 0: the whole model's test loss and accuracy (every --ps-eval-every rounds, or
        ``force``); the other shards send it their slices at the same rounds."""
        due = force or self.rounds % self.algorithm.options.ps_eval_every == 0
        if not due or self.env is None:
            return {}
        if self.shard != 0:
            self.mailbox.send(0, [LAST_SLICE if force else SLICE, self.rounds],
                              [self.x.clone()] + ([self.b.clone()] if self.b.numel() else []))
            return {}
        with torch.no_grad():
            self._load_slice(0, [self.x] + ([self.b] if self.b.numel() else []))
            for s in range(1, self.shards):
                letter = self.mailbox.receive([s], "model slice", lambda l, s=s: l.peer == s and l.kind in (SLICE, LAST_SLICE))
                self._load_slice(s, letter.tensors)
        result = self.env.evaluate(self.model)
        self.final = {"test_acc": result["val_acc"], "test_loss": result["val_loss"]}
        return result

    def _load_slice(self, shard: int, tensors: List[torch.Tensor]) -> None:
        layout = self.wire.layout
        params = [self.params[i] for i in layout.params[shard]]
        buffers = [self.buffers[i] for i in layout.buffers[shard]]
        if params:
            torch._foreach_copy_(params, [v.to(p.device) for v, p in zip(flat_views(tensors[0], params), params)])
        if buffers:
            torch._foreach_copy_(buffers, [v.to(b.device) for v, b in zip(flat_views(tensors[1], buffers), buffers)])

    def _summary(self) -> Dict[str, Any]:
        comm = self.algorithm.comm
        summary = {"role": "server", "shard": self.shard, "rank": self.algorithm.ctx.rank, "rounds": self.rounds,
                   "global_iterations": self.iterations, "tensors": len(self.mine), "elements": int(self.x.numel()),
                   "bytes_recv": comm.bytes_recv, "bytes_sent": comm.bytes_sent, "comm": comm.as_dict(),
                   "wall_time_s": round(time.perf_counter() - self.started, 3), **self.final}
        if self.rows is not None:
            self.rows.close()
        if self.env is not None:
            atomic_write_json(self.env.out / "ps" / f"shard{self.shard}.json", summary)
        return summary
