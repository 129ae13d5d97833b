"""What the parameter-server family shares: the roles, the options, and the worker's side.

Ranks ``0 .. S-1`` (``--ps-shards S``) are server shards (:mod:`~crossover_sgd.algorithms.ps.server`),
the others workers (the trainers). Each shard holds whole tensors of the model, split by bytes
(:mod:`~crossover_sgd.algorithms.ps.shards`). A worker takes local SGD steps (the run's optimizer
and ``--lr``) and sums its raw gradients into ``G``; a *push* sends every shard its slice of ``G``
and the number ``k`` of steps in it; a shard applies ``x = x - lr_ps * mean_i(G_i)`` once every
worker's push of the round has arrived and replies with the new slice (or, quantized, the update).

How the worker overlaps (:attr:`PSAlgorithm.overlap`):

* blocking (localSGD): after exactly K steps, push and wait for the reply; take ``w = x``;
* overlapped (OSP, LOSP, DQLOSP): after the first K steps of a segment, push and go on computing;
  when the reply is in (or after K more steps, waiting for it then) take the new model (LOSP:
  ``w = x - gamma * G`` with G the steps computed meanwhile) and push those steps: their count is
  that round's k, which thus adapts to how long communication takes. ``--k-trace DIR`` replays the
  k of every push of an earlier run instead (the same schedule for two algorithms).

*Segments.* Before an evaluation or a checkpoint the training loop calls
:meth:`Algorithm.flush`: the worker pushes what it has (``final``, possibly empty) and every
worker then takes the same global model, so evaluations see identical replicas and a checkpoint
has no message in flight. A shard aggregates the workers still in the segment (a worker whose
final push is in takes no part in later rounds of the segment), so workers whose k differ never
wait for each other.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import torch
from torch import nn

from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.algorithms.options import AlgorithmOptions, option
from crossover_sgd.algorithms.ps.protocol import BYE, DONE, LAST_KINDS, PUSH, REPLY, Wire
from crossover_sgd.algorithms.ps.records import SCHEDULES, WORKER_COLUMNS, RowLog, scheduled
from crossover_sgd.algorithms.ps.shards import ShardLayout
from crossover_sgd.algorithms.ps.state import flat_views, model_state, ps_groups, state_digest
from crossover_sgd.comm.mailbox import Mailbox
from crossover_sgd.comm.quantize import dequantize, quantize
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.process_group import TRAINER

__all__ = ["PSOptions", "PSAlgorithm", "SERVER"]

log = logging.getLogger(__name__)

#: The role of a server shard's rank.
SERVER = "server"


@dataclass
class PSOptions(AlgorithmOptions):
    ps_shards: int = option(1, "parameter server: server ranks 0..S-1 holding the model's tensors, split by bytes",
                            minimum=1, metavar="S")
    local_steps: int = option(8, "parameter server: local steps K per push (localsgd: exactly K; osp, losp, "
                                 "dqlosp: at most K while the previous push travels)", minimum=1, metavar="K")
    ps_lr: Optional[float] = option(None, "parameter server: the server's learning rate in x = x - lr_ps * "
                                          "mean(G) (default: --lr)", minimum=0.0)
    ps_lr_schedule: str = option("constant", "parameter server: --ps-lr over training progress", choices=SCHEDULES)
    ps_eval_every: int = option(1, "parameter server: evaluate the server's model every N aggregations (and "
                                   "at the end)", minimum=1, metavar="N")
    ps_delay: float = option(0.0, "parameter server: every server reply leaves this many seconds late (a slow "
                                  "link on purpose, for tests and benchmarks)", minimum=0.0, metavar="SECONDS")
    k_trace: Optional[str] = option(None, "parameter server: replay the k of every push from an earlier run's "
                                          "directory (its ps/worker_rank*.csv, by worker order)", metavar="DIR")

    def check(self, world_size: Optional[int]) -> None:
        if world_size is not None and world_size <= self.ps_shards:
            raise ConfigError(f"{{ps_shards}} {self.ps_shards} server rank(s) leave no worker among the {world_size} "
                              f"rank(s): start at least {self.ps_shards + 1} ranks")
        if self.k_trace is not None and not (Path(self.k_trace) / "ps").is_dir():
            raise ConfigError(f"{{k_trace}} {self.k_trace} is not a run directory with a ps/ folder of worker "
                              "records: give the --out of an earlier run of this family")


def read_k_trace(directory: str, train_rank: int) -> List[Tuple[int, bool]]:
    """The k of each push of the ``train_rank``-th worker of an earlier run (its
    ``DIR/ps/worker_rank*.csv`` in rank order: the trace replays whatever that run's shard count),
    with whether it was a segment's final push."""
    files = sorted(Path(directory, "ps").glob("worker_rank*.csv"), key=lambda p: int(p.stem[len("worker_rank"):]))
    if train_rank >= len(files):
        raise ConfigError(f"{{k_trace}} {directory} has the pushes of {len(files)} worker(s), not of worker "
                          f"{train_rank + 1}: replay a run with at least as many workers")
    path = files[train_rank]
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [(int(row["k"]), bool(int(row["final"]))) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{{k_trace}} {directory}: cannot read the pushes in {path}: {exc}") from None


@dataclass
class _Round:
    """A push waiting for its replies."""

    index: int
    k: int
    final: bool
    loss: float
    sent_at: float
    train_s: float
    replies: Dict[int, Any]


class PSAlgorithm(Algorithm):
    """Base of the family (see the module docstring); subclasses set the class attributes."""

    options_class: ClassVar = PSOptions
    group_collectives = True
    replicas_identical = False
    metric_columns = {"ps_pushes": float("nan"), "ps_mean_k": float("nan")}
    #: Whether the worker computes while its push travels (OSP and after) or waits (localSGD).
    overlap: ClassVar[bool] = False
    #: Whether the worker takes ``x - gamma * G`` instead of ``x`` (LOSP, DQLOSP).
    compensate: ClassVar[bool] = False
    #: The bit width of the messages (None: raw tensors); DQLOSP reads ``--quant-bits``.
    bits: ClassVar[Optional[int]] = None

    @classmethod
    def roles(cls, world_size: int, options: PSOptions) -> List[str]:
        return [SERVER] * options.ps_shards + [TRAINER] * (world_size - options.ps_shards)

    def message_bits(self) -> Optional[int]:
        return self.bits

    def stochastic(self) -> bool:
        return False

    def wire(self, model: nn.Module) -> Wire:
        params, buffers = model_state(model)
        layout = ShardLayout.of(params, buffers, self.options.ps_shards)
        return Wire(layout, params[0].dtype, self.message_bits())

    def names(self) -> Dict[int, str]:
        shards = self.options.ps_shards
        return {r: (f"server shard {r} (rank {r})" if r < shards else f"worker rank {r}")
                for r in range(self.ctx.world_size)}

    def liveness(self) -> Optional[Callable[[int], Optional[float]]]:
        heartbeat = getattr(self.ctx, "heartbeat", None)
        return heartbeat.staleness if heartbeat is not None else None

    def prepare_role(self, model: nn.Module, resume_state: Optional[Dict[str, Any]] = None) -> None:
        """A server shard; resumed, it starts from the first worker's checkpoint: checkpoints are
        taken at a segment's end, where every worker holds the global model and the server's
        counters (see :meth:`state_dict`)."""
        from crossover_sgd.algorithms.ps.server import ShardServer

        clock = None
        if resume_state is not None:
            model.load_state_dict(resume_state["model_state"])
            clock = resume_state["algorithm_state"]["server_clock"]
        self.server = ShardServer(self, model, clock)  # refuses a shard count the model cannot fill
        self.wire_ = self.server.wire  # the layout seeds() reads (stochastic rounding of the server's updates)

    def run_role(self, model: nn.Module, env: Any) -> Dict[str, Any]:
        return self.server.run(env)

    # ----------------------------------------------------------------------------- worker: set-up
    def prepare(self, model: nn.Module) -> nn.Module:
        model = super().prepare(model)
        self.wire_ = self.wire(model)
        layout = self.wire_.layout
        self.params, self.buffers = model_state(model)
        self.shards = list(range(self.options.ps_shards))
        dtype, device = self.wire_.dtype, self.params[0].device
        self.mine = {s: [self.params[i] for i in layout.params[s]] for s in self.shards}
        self.my_buffers = {s: [self.buffers[i] for i in layout.buffers[s]] for s in self.shards}
        self.g = {s: torch.zeros(layout.numel(s), dtype=dtype, device=device) for s in self.shards}
        self.g_views = {s: flat_views(self.g[s], self.mine[s]) for s in self.shards}
        self.x = {s: torch.cat([p.detach().reshape(-1).cpu() for p in self.mine[s]]) if self.mine[s]
                  else torch.zeros(0, dtype=dtype) for s in self.shards}  # the worker's copy of the global model
        groups = ps_groups(len(self.shards), list(self.ctx.trainers), self.ctx.rank, timeout_s=86_400.0)
        self.mailbox = Mailbox(self.ctx.rank, groups, self.wire_.payload, stats=self.comm, last_kinds=LAST_KINDS,
                               names=self.names(), timeout_s=self.config.timeout, liveness=self.liveness())
        self.trace = read_k_trace(self.options.k_trace, self.ctx.train_rank) if self.options.k_trace else None
        self.planned = 0  # steps this worker will take (set by plan())
        self.steps = self.k = self.pushes = 0
        self.k_total = 0
        self.synced = True  # no step since the last segment's end
        self.pending: Optional[_Round] = None
        self.loss_sum, self.loss_n = 0.0, 0
        self.copy_checks = 0
        self.wait_s = 0.0
        self.started = self.last_push_at = time.perf_counter()  # again at the first micro-batch (below)
        self.elapsed_before = 0.0  # of the earlier segments of a resumed run
        self.training = False
        self.wait_since_push = 0.0
        self.server_final: Dict[str, float] = {}
        self.rows = RowLog(self.out / "ps" / f"worker_rank{self.ctx.rank}.csv", WORKER_COLUMNS,
                           append=self.config.resume) if self.out is not None else None
        self.server_clock = {"rounds": 0, "iterations": 0}  # the shards' counters at the last reply
        return model

    def plan(self, steps_per_epoch: int) -> None:
        cfg = self.config
        total = cfg.epochs * steps_per_epoch
        self.planned = min(total, cfg.stop_at_step) if cfg.stop_at_step is not None else total

    # ----------------------------------------------------------------------------- worker: steps
    def micro_batch(self, is_last: bool):
        if not self.training:  # the clocks start with training, not with the set-up before it
            self.training = True
            self.started = self.last_push_at = time.perf_counter()
        return super().micro_batch(is_last)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def observe(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss)
        self.loss_sum = self.loss_sum + torch.where(finite, loss, torch.zeros_like(loss))
        self.loss_n = self.loss_n + finite.to(torch.int64)

    def optimizer_step(self, local_step: Callable[[], None], optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            for s in self.shards:
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.mine[s]]
                if grads:
                    torch._foreach_add_(self.g_views[s], grads)
        local_step()
        self.k += 1
        self.steps += 1
        self.synced = False

    def target_k(self) -> Optional[float]:
        """The k this round must have when replaying a trace (None: decided by the replies; inf:
        the trace's push is a segment's final one, which only :meth:`flush` sends, even when its
        k steps are all taken)."""
        if self.trace is not None and self.pushes < len(self.trace):
            k, final = self.trace[self.pushes]
            return float("inf") if final else max(k, 1)
        return None

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        target = self.target_k()
        limit = target if target is not None else self.options.local_steps
        if not self.overlap or self.pending is None:
            if self.k >= limit:
                self._push(final=False)
                if not self.overlap:
                    self._complete(optimizer)
            return
        if target is None and not self._arrived() and self.k < limit:
            return  # keep computing while the push travels
        if target is not None and self.k < target:
            return
        self._complete(optimizer)
        self._push(final=False)

    def flush(self) -> None:
        """End the segment: finish the push in flight, push the rest (final) and take the model
        every worker takes (see the module docstring). Nothing to do right after one."""
        if self.synced:
            return
        if self.pending is not None:
            self._complete(None)
        self._push(final=True)
        self._complete(None)
        self.synced = True

    # ----------------------------------------------------------------------------- worker: messages
    def _push(self, final: bool) -> None:
        k = self.k
        n = int(self.loss_n)
        loss = float(self.loss_sum) / n if n else float("nan")
        header = [PUSH, self.pushes, k, int(final), loss, self.planned, int(k == 0)]
        now = time.perf_counter()
        for s in self.shards:
            tensors: List[torch.Tensor] = []
            if k > 0:
                tensors = self._encode(s, self.g[s].detach().to("cpu", copy=True))
                tensors += [torch.cat([b.detach().reshape(-1).cpu() for b in self.my_buffers[s]])] \
                    if self.my_buffers[s] else []
            self.mailbox.send(s, header, tensors)
        self.pending = _Round(self.pushes, k, final, loss, now, now - self.last_push_at - self.wait_since_push, {})
        self.last_push_at, self.wait_since_push = now, 0.0
        self.pushes += 1
        self.k_total += k
        self.k = 0
        self.loss_sum, self.loss_n = 0.0, 0
        for s in self.shards:
            self.g[s].zero_()

    def _encode(self, shard: int, flat: torch.Tensor) -> List[torch.Tensor]:
        """The payload of a gradient sum: raw, or quantized (see :mod:`crossover_sgd.comm.quantize`)."""
        bits = self.wire_.bits
        if bits is None:
            return [flat]
        sizes = self.wire_.layout.param_sizes[shard]
        seeds = self.seeds(self.ctx.train_rank, self.pushes, shard)
        packed, norms = quantize(flat, sizes, bits, stochastic=self.stochastic(), seeds=seeds)
        return [packed, norms]

    def seeds(self, who: int, index: int, shard: int) -> Optional[List[int]]:
        """Stochastic rounding's seed per tensor: from the run's seed, the sender (a worker's
        training rank, the server -1: not a world rank, which moves with S), the message index and
        the tensor's place in the model (not its shard): results do not depend on S."""
        if not self.stochastic():
            return None
        base = (self.config.seed * 1_000_003 + who * 10_007 + index) * 1_009
        return [base + i for i in self.wire_.layout.params[shard]]

    def _arrived(self) -> bool:
        assert self.pending is not None
        for s in self.shards:
            if s not in self.pending.replies:
                letter = self.mailbox.poll(lambda l, s=s: l.peer == s and l.kind == REPLY)
                if letter is None:
                    return False
                self.pending.replies[s] = letter
        return True

    def _complete(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Wait for every shard's reply to the pending push and take the new model."""
        pending = self.pending
        assert pending is not None
        waited = time.perf_counter()
        for s in self.shards:
            if s not in pending.replies:
                pending.replies[s] = self.mailbox.receive([s], "reply", lambda l, s=s: l.peer == s and l.kind == REPLY)
        wait = time.perf_counter() - waited
        self.wait_s += wait
        self.wait_since_push += wait
        gamma = self.gamma(optimizer) if self.compensate and not pending.final else 0.0
        with torch.no_grad():
            for s in self.shards:
                self._take(s, pending.replies[s], gamma)
        header = pending.replies[0].header
        self.server_clock = {"rounds": int(header[1]), "iterations": int(header[3]), "elapsed_s": header[6]}
        self.pending = None
        if self.rows is not None:
            # every shard replied, so every shard has the whole push; but the mailbox's sender
            # threads count a letter's bytes only after their dist.send calls returned, which may
            # come later than the reply: wait for that bookkeeping (nothing else is queued: the
            # next push comes after this), so the row's bytes_sent holds exactly pushes 0..index
            self.mailbox.wait_sent(timeout=self.config.timeout)
            self.rows.append({"push": pending.index, "k": pending.k, "final": int(pending.final),
                              "train_loss": pending.loss, "latency_s": time.perf_counter() - pending.sent_at,
                              "wait_s": wait, "train_s": pending.train_s, "gamma": gamma,
                              "bytes_sent": self.comm.bytes_sent, "bytes_recv": self.comm.bytes_recv,
                              "elapsed_s": self.elapsed()})

    def _take(self, shard: int, letter: Any, gamma: float) -> None:
        """Update this worker's copy of shard ``shard``'s slice from its reply; set the model to
        it (minus ``gamma`` times the steps computed since the push)."""
        x, tensors = self.x[shard], list(letter.tensors)
        if self.wire_.bits is None:
            x.copy_(tensors.pop(0))
        else:
            sizes = self.wire_.layout.param_sizes[shard]
            for _ in range(int(letter.header[2])):
                packed, norms = tensors.pop(0), tensors.pop(0)
                x.sub_(dequantize(packed, norms, sizes, self.wire_.bits))
            if state_digest(x) != int(letter.header[5]):
                raise RuntimeError(f"rank {self.ctx.rank}: its copy of server shard {shard}'s model differs from the "
                                   f"server's after round {int(letter.header[1])} (a bug: please report it)")
            self.copy_checks += 1
        if tensors:  # the averaged buffers
            torch._foreach_copy_(self.my_buffers[shard], flat_views(tensors.pop(0), self.my_buffers[shard]))
        params = self.mine[shard]
        if not params:
            return
        torch._foreach_copy_(params, flat_views(x, params))
        if gamma:
            torch._foreach_add_(params, self.g_views[shard], alpha=-gamma)

    def gamma(self, optimizer: Optional[torch.optim.Optimizer]) -> float:
        """LOSP's compensation step at this point of training (``--losp-gamma``, default the lr)."""
        opts = self.options
        base = opts.losp_gamma if opts.losp_gamma is not None else self.config.lr
        return scheduled(base, opts.losp_gamma_schedule, self.steps / max(self.planned, 1))

    # ----------------------------------------------------------------------------- worker: the end
    def finish(self, status: str) -> None:
        """Tell every shard this worker is done; take the shards' goodbyes (the server's result)."""
        self.flush()
        for s in self.shards:
            self.mailbox.send(s, [DONE])
        for s in self.shards:
            letter = self.mailbox.receive([s], "goodbye", lambda l, s=s: l.peer == s and l.kind == BYE)
            if s == 0:
                rounds, iterations, acc, loss = letter.header[1:5]
                self.server_final = {"rounds": int(rounds), "global_iterations": int(iterations),
                                     "test_acc": acc, "test_loss": loss}
        self.mailbox.wait_sent(timeout=self.config.timeout)
        if self.rows is not None:
            self.rows.close()

    def metrics(self) -> Dict[str, float]:
        return {"ps_pushes": float(self.pushes), "ps_mean_k": self.k_total / max(self.pushes, 1)}

    def state_dict(self) -> Dict[str, Any]:
        """Taken after :meth:`flush` (a segment's end): the model is the global model."""
        return {**super().state_dict(), "pushes": self.pushes, "steps": self.steps, "k_total": self.k_total,
                "wait_s": self.wait_s, "copy_checks": self.copy_checks, "server_clock": dict(self.server_clock),
                "elapsed_s": self.elapsed()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pushes, self.steps, self.k_total = int(state["pushes"]), int(state["steps"]), int(state["k_total"])
        self.wait_s, self.copy_checks = float(state["wait_s"]), int(state["copy_checks"])
        self.server_clock = dict(state["server_clock"])
        self.elapsed_before = float(state["elapsed_s"])
        with torch.no_grad():  # the worker's copy of the global model: the model (a segment's end)
            for s in self.shards:
                if self.mine[s]:
                    self.x[s].copy_(torch.cat([p.detach().reshape(-1).cpu() for p in self.mine[s]]))

    def summary(self) -> Dict[str, Any]:
        return {"rank": self.ctx.rank, "pushes": self.pushes, "steps": self.steps,
                "mean_k": self.k_total / max(self.pushes, 1), "wait_s": round(self.wait_s, 3),
                "train_s": round(time.perf_counter() - self.started - self.wait_s, 3),
                "copy_checks": self.copy_checks, "server": self.server_final}
