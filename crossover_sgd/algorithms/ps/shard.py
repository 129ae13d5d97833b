"""A server shard's rank: its slice of the global model, its links, its records and its end.

:class:`ShardServer` holds what every shard loop shares: the slice ``x`` of the model's
parameters and ``b`` of its floating buffers (:class:`~crossover_sgd.algorithms.ps.shards.ShardLayout`),
the mailbox to the workers (and shard 0 to the other shards), the counters (``rounds``: updates
applied; ``iterations``: the workers' steps in them), the evaluation of the whole model on shard 0
(the other shards send it their slices at the same updates) and the end: when :meth:`serve`
returns, a last evaluation, a goodbye to every worker (BYE, with shard 0's final test accuracy and
the workers lost on the way) and the shard's summary ``ps/shard{s}.json``. Subclasses write
:meth:`serve`: the synchronous rounds of the parameter-server family
(:class:`~crossover_sgd.algorithms.ps.server.SyncShard`), Downpour's updates as they arrive.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Dict, List, Optional, Sequence

import torch
from torch import nn

from crossover_sgd.algorithms.ps.protocol import BYE, LAST_KINDS, LAST_SLICE, SLICE
from crossover_sgd.algorithms.ps.records import SCHEDULES, RowLog
from crossover_sgd.algorithms.ps.state import flat_views, model_state, ps_groups
from crossover_sgd.atomic import atomic_write_json
from crossover_sgd.comm.mailbox import Mailbox

__all__ = ["ShardServer"]


class ShardServer:
    """Server shard ``ctx.rank`` of ``algorithm``'s run (a
    :class:`~crossover_sgd.algorithms.ps.family.ServerFamily`; ``model``: the run's initial model;
    ``clock``: a resumed run's counters). Created where the trainers prepare (it joins the run's
    groups); :meth:`run` serves until every worker is done."""

    #: The columns of ``ps/shard{s}.csv`` (a row per update).
    columns: ClassVar[Sequence[str]] = ()

    def __init__(self, algorithm: Any, model: nn.Module, clock: Optional[Dict[str, float]] = None):
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
        groups = ps_groups(self.shards, self.workers, ctx.rank, timeout_s=86_400.0, extra=algorithm.extra_ranks())
        self.mailbox = Mailbox(ctx.rank, groups, self.payload, stats=algorithm.comm, last_kinds=LAST_KINDS,
                               names=algorithm.names(), timeout_s=config.timeout, liveness=algorithm.liveness(),
                               delay_s=opts.ps_delay)
        self.lr = opts.ps_lr if opts.ps_lr is not None else config.lr
        self.lr_now = self.lr
        self.lr_schedule = opts.ps_lr_schedule or (config.lr_schedule if config.lr_schedule in SCHEDULES
                                                   else "constant")  # the server's lr decays like the workers'
        self.rounds = int(clock["rounds"]) if clock else 0  # resumed: the first worker's checkpoint's counters
        self.iterations = int(clock["iterations"]) if clock else 0
        self.elapsed_before = float(clock.get("elapsed_s", 0.0)) if clock else 0.0
        self.planned: Dict[int, int] = {}
        self.started = time.perf_counter()
        self.rows: Any = None
        self.final: Dict[str, float] = {"test_acc": float("nan"), "test_loss": float("nan")}

    def payload(self, peer: int, header: List[float]) -> List[torch.Tensor]:
        """What a letter from ``peer`` carries: a worker's letters are about this shard's slice,
        another shard's SLICE about its own."""
        return self.wire.payload(peer if peer < self.shards else self.shard, header)

    # ----------------------------------------------------------------------------- the run
    def run(self, env: Any) -> Dict[str, Any]:
        """Serve (``env``: the role's output folder and evaluation); return the shard's summary."""
        self.env = env
        self.rows = RowLog(env.out / "ps" / f"shard{self.shard}.csv", self.columns, append=self.algorithm.config.resume)
        self.started = time.perf_counter()
        self.serve()
        self._evaluate(force=True)
        lost = self.lost_workers()
        for w in self.workers:
            if w not in lost:
                self.mailbox.send(w, [BYE, self.rounds, self.iterations, self.final["test_acc"],
                                      self.final["test_loss"], len(lost)],
                                  [torch.tensor(lost, dtype=torch.float64)] if lost else [])
        for rank in self.algorithm.extra_ranks():  # a coordinator
            self.mailbox.send(rank, [BYE])
        if self.shard == 0:
            for s in range(1, self.shards):
                self.mailbox.send(s, [BYE])
        else:
            self.mailbox.receive([0], "goodbye", lambda l: l.peer == 0 and l.kind == BYE, patient=True)
        self.mailbox.wait_sent(timeout=self.algorithm.config.timeout)
        return self._summary()

    def serve(self) -> None:
        """The shard's loop: returns when every worker is done (or lost, where that is allowed)."""
        raise NotImplementedError

    def lost_workers(self) -> List[int]:
        """Workers dropped on the way (the loop allowed to go on without them)."""
        return []

    def elapsed(self) -> float:
        """Seconds since the shard started serving (resumed: since the run's start)."""
        return self.elapsed_before + time.perf_counter() - self.started

    # ----------------------------------------------------------------------------- evaluation
    def _evaluate(self, force: bool) -> Dict[str, float]:
        """Shard 0: the whole model's test loss and accuracy (every ``--ps-eval-every`` updates, or
        ``force``); the other shards send it their slices at the same updates."""
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
                letter = self.mailbox.receive([s], "model slice", lambda l, s=s: l.peer == s and l.kind in (SLICE, LAST_SLICE),
                                              patient=True)
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

    # ----------------------------------------------------------------------------- the end
    def extra_summary(self) -> Dict[str, Any]:
        """The loop's own part of the shard's summary."""
        return {}

    def _summary(self) -> Dict[str, Any]:
        comm = self.algorithm.comm
        summary = {"role": "server", "shard": self.shard, "rank": self.algorithm.ctx.rank, "rounds": self.rounds,
                   "global_iterations": self.iterations, "tensors": len(self.mine), "elements": int(self.x.numel()),
                   "bytes_recv": comm.bytes_recv, "bytes_sent": comm.bytes_sent, "comm": comm.as_dict(),
                   "wall_time_s": round(self.elapsed(), 3), **self.final, **self.extra_summary()}
        if self.rows is not None:
            self.rows.close()
        if self.env is not None:
            atomic_write_json(self.env.out / "ps" / f"shard{self.shard}.json", summary)
        return summary
