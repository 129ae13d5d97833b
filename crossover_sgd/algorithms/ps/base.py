"""The parameter-server family's worker: rounds of pushes, overlap, segments, compensation.

Ranks ``0 .. S-1`` (``--ps-shards S``) are server shards (:mod:`~crossover_sgd.algorithms.ps.server`),
the others workers (the trainers): :mod:`~crossover_sgd.algorithms.ps.family`. Each shard holds whole tensors of the model, split by bytes
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import torch
from torch import nn

from crossover_sgd.algorithms.options import option
from crossover_sgd.algorithms.ps.family import SERVER, ServerFamily, ServerOptions
from crossover_sgd.algorithms.ps.protocol import PUSH, REPLY
from crossover_sgd.algorithms.ps.records import WORKER_COLUMNS, scheduled
from crossover_sgd.algorithms.ps.state import flat_views, state_digest
from crossover_sgd.comm.quantize import dequantize, quantize
from crossover_sgd.errors import ConfigError

__all__ = ["PSOptions", "PSAlgorithm", "SERVER"]


@dataclass
class PSOptions(ServerOptions):
    local_steps: int = option(8, "parameter server: local steps K per push (localsgd: exactly K; osp, losp, "
                                 "dqlosp: at most K while the previous push travels)", minimum=1, metavar="K")
    k_trace: Optional[str] = option(None, "parameter server: replay the k of every push from an earlier run's "
                                          "directory (its ps/worker_rank*.csv, by worker order)", metavar="DIR")

    def check(self, world_size: Optional[int]) -> None:
        super().check(world_size)
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


class PSAlgorithm(ServerFamily):
    """Base of the family (see the module docstring); subclasses set the class attributes."""

    options_class: ClassVar = PSOptions
    group_collectives = True
    replicas_identical = False
    metric_columns = {"ps_pushes": float("nan"), "ps_mean_k": float("nan")}
    #: Whether the worker computes while its push travels (OSP and after) or waits (localSGD).
    overlap: ClassVar[bool] = False
    #: Whether the worker takes ``x - gamma * G`` instead of ``x`` (LOSP, DQLOSP).
    compensate: ClassVar[bool] = False

    @property
    def server_class(self) -> Any:
        from crossover_sgd.algorithms.ps.server import SyncShard

        return SyncShard

    def prepare(self, model: nn.Module) -> nn.Module:
        model = super().prepare(model)
        self.connect(model, WORKER_COLUMNS)
        self.trace = read_k_trace(self.options.k_trace, self.ctx.train_rank) if self.options.k_trace else None
        self.k = 0  # steps since the last push
        self.synced = True  # no step since the last segment's end
        self.pending: Optional[_Round] = None
        self.copy_checks = 0
        self.last_push_at = time.perf_counter()
        self.wait_since_push = 0.0
        return model

    def training_started(self) -> None:
        self.last_push_at = time.perf_counter()

    def optimizer_step(self, local_step: Callable[[], None], optimizer: torch.optim.Optimizer) -> None:
        super().optimizer_step(local_step, optimizer)
        self.k += 1
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
        loss = self.take_loss()
        header = [PUSH, self.pushes, k, int(final), loss, self.planned, int(k == 0)]
        now = time.perf_counter()
        for s in self.shards:
            tensors: List[torch.Tensor] = []
            if k > 0:
                tensors = self._encode(s, self.g[s].detach().to("cpu", copy=True)) + self.buffer_payload(s)
            self.mailbox.send(s, header, tensors)
        self.pending = _Round(self.pushes, k, final, loss, now, now - self.last_push_at - self.wait_since_push, {})
        self.last_push_at, self.wait_since_push = now, 0.0
        self.pushes += 1
        self.k_total += k
        self.k = 0
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

    def metrics(self) -> Dict[str, float]:
        return {"ps_pushes": float(self.pushes), "ps_mean_k": self.k_total / max(self.pushes, 1)}

    def state_dict(self) -> Dict[str, Any]:
        """Taken after :meth:`flush` (a segment's end): the model is the global model."""
        return {**super().state_dict(), "copy_checks": self.copy_checks}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.copy_checks = int(state["copy_checks"])
        with torch.no_grad():  # the worker's copy of the global model: the model (a segment's end)
            for s in self.shards:
                if self.mine[s]:
                    self.x[s].copy_(torch.cat([p.detach().reshape(-1).cpu() for p in self.mine[s]]))

    def summary(self) -> Dict[str, Any]:
        return {**super().summary(), "copy_checks": self.copy_checks}
