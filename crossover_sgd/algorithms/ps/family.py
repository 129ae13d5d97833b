"""What every algorithm whose model lives on server shards shares (the parameter-server family and
DistBelief): the roles, the server options, the shard rank's loop, and the worker's plumbing.

Ranks ``0 .. S-1`` (``--ps-shards S``) are server shards; an algorithm may put ranks of its own
roles after them (:meth:`ServerFamily.extra_roles`: Sandblaster's coordinator); the rest are the
workers (the trainers; *replicas* in DistBelief's words). Each shard holds whole tensors of the
model, split by bytes (:mod:`~crossover_sgd.algorithms.ps.shards`), and runs the algorithm's
:attr:`ServerFamily.server_class` loop (:mod:`~crossover_sgd.algorithms.ps.shard`). A worker
connects to every shard (:meth:`ServerFamily.connect`: its mailbox, its per-shard views of the
model, its gradient sums ``G`` and its copy of the global model), sums its raw gradients into
``G`` at every step, and at its end tells every shard it is done and takes their goodbye.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence

import torch
from torch import nn

from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.algorithms.options import AlgorithmOptions, option
from crossover_sgd.algorithms.ps.protocol import BYE, DONE, LAST_KINDS, Wire
from crossover_sgd.algorithms.ps.records import SCHEDULES, RowLog
from crossover_sgd.algorithms.ps.shards import ShardLayout
from crossover_sgd.algorithms.ps.state import flat_views, model_state, ps_groups
from crossover_sgd.comm.mailbox import Mailbox
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.process_group import TRAINER

__all__ = ["SERVER", "ServerOptions", "ServerFamily"]

#: The role of a server shard's rank.
SERVER = "server"


@dataclass
class ServerOptions(AlgorithmOptions):
    ps_shards: int = option(1, "parameter server: server ranks 0..S-1 holding the model's tensors, split by bytes",
                            minimum=1, metavar="S")
    ps_lr: Optional[float] = option(None, "parameter server: the server's learning rate (default: --lr)",
                                    minimum=0.0)
    ps_lr_schedule: Optional[str] = option(None, "parameter server: --ps-lr over training progress (default: the "
                                                 "shape of --lr-schedule if constant, linear or cosine, else constant)",
                                           choices=SCHEDULES)
    ps_eval_every: int = option(1, "parameter server: evaluate the server's model every N updates (and at the "
                                   "end)", minimum=1, metavar="N")
    ps_delay: float = option(0.0, "parameter server: every server reply leaves this many seconds late (a slow "
                                  "link on purpose, for tests and benchmarks)", minimum=0.0, metavar="SECONDS")

    def extra_ranks(self) -> int:
        """Ranks of roles other than shards and workers (Sandblaster's coordinator)."""
        return 0

    def check(self, world_size: Optional[int]) -> None:
        others = self.ps_shards + self.extra_ranks()
        if world_size is not None and world_size <= others:
            what = f"{self.ps_shards} server rank(s)" + (f" and {self.extra_ranks()} coordinator"
                                                         if self.extra_ranks() else "")
            raise ConfigError(f"{{ps_shards}} {self.ps_shards}: {what} leave no worker among the {world_size} "
                              f"rank(s): start at least {others + 1} ranks")


class ServerFamily(Algorithm):
    """Base of the algorithms around server shards; see the module docstring."""

    options_class: ClassVar = ServerOptions
    #: The bit width of the messages (None: raw tensors).
    bits: ClassVar[Optional[int]] = None
    #: The worker's records' name (``ps/worker_rank{r}.csv``).
    worker_csv: ClassVar[str] = "worker_rank{rank}.csv"
    #: What messages call a worker ("replica" in DistBelief's words).
    worker_word: ClassVar[str] = "worker"

    @property
    def server_class(self) -> Any:
        """The shard's loop (a :class:`~crossover_sgd.algorithms.ps.shard.ShardServer`)."""
        raise NotImplementedError

    @classmethod
    def extra_roles(cls, options: ServerOptions) -> List[str]:
        """The roles of the ranks between the shards and the workers."""
        return []

    @classmethod
    def roles(cls, world_size: int, options: ServerOptions) -> List[str]:
        extra = cls.extra_roles(options)
        return [SERVER] * options.ps_shards + extra + [TRAINER] * (world_size - options.ps_shards - len(extra))

    def message_bits(self) -> Optional[int]:
        return self.bits

    def stochastic(self) -> bool:
        return False

    def seeds(self, who: int, index: int, shard: int) -> Optional[List[int]]:
        """Stochastic rounding's seed per tensor (None: deterministic messages)."""
        return None

    def wire(self, model: nn.Module) -> Wire:
        params, buffers = model_state(model)
        layout = ShardLayout.of(params, buffers, self.options.ps_shards)
        return Wire(layout, params[0].dtype, self.message_bits())

    def names(self) -> Dict[int, str]:
        roles = self.roles(self.ctx.world_size, self.options)
        def name(rank: int, role: str) -> str:
            if role == SERVER:
                return f"server shard {rank} (rank {rank})"
            return f"{self.worker_word} rank {rank}" if role == TRAINER else f"{role} (rank {rank})"

        return {r: name(r, role) for r, role in enumerate(roles)}

    def liveness(self) -> Optional[Callable[[int], Optional[float]]]:
        heartbeat = getattr(self.ctx, "heartbeat", None)
        return heartbeat.staleness if heartbeat is not None else None

    # ----------------------------------------------------------------------------- the shards
    def prepare_role(self, model: nn.Module, resume_state: Optional[Dict[str, Any]] = None) -> None:
        """A server shard; resumed, it starts from the first worker's checkpoint (its model and
        the shards' counters, ``algorithm_state["server_clock"]``)."""
        clock = None
        if resume_state is not None:
            model.load_state_dict(resume_state["model_state"])
            clock = resume_state["algorithm_state"].get("server_clock")
        self.server = self.server_class(self, model, clock)  # refuses a shard count the model cannot fill
        self.wire_ = self.server.wire  # the layout seeds() reads (the shard's own quantized updates)

    def run_role(self, model: nn.Module, env: Any) -> Dict[str, Any]:
        return self.server.run(env)

    # ----------------------------------------------------------------------------- the worker
    def connect(self, model: nn.Module, columns: Sequence[str]) -> None:
        """Set up this worker's side (call in :meth:`prepare`): per shard its tensors, its gradient
        sum ``g``, its copy ``x`` of the shard's slice; the mailbox to the shards; the records."""
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
        groups = ps_groups(self.options.ps_shards, list(self.ctx.trainers), self.ctx.rank, timeout_s=86_400.0,
                           extra=self.extra_ranks())
        self.mailbox = Mailbox(self.ctx.rank, groups, self.payload, stats=self.comm, last_kinds=LAST_KINDS,
                               names=self.names(), timeout_s=self.config.timeout, liveness=self.liveness())
        self.planned = 0  # steps this worker will take (set by plan())
        self.steps = self.pushes = self.k_total = 0
        self.loss_sum, self.loss_n = 0.0, 0
        self.wait_s = 0.0
        self.started = time.perf_counter()  # again at the first micro-batch (below)
        self.elapsed_before = 0.0  # of the earlier segments of a resumed run
        self.training = False
        self.server_final: Dict[str, Any] = {}
        self.server_clock: Dict[str, float] = {"rounds": 0, "iterations": 0}  # the shards' counters, last heard
        self.rows = (RowLog(self.out / "ps" / self.worker_csv.format(rank=self.ctx.rank), columns,
                            append=self.config.resume) if self.out is not None else None)

    def extra_ranks(self) -> List[int]:
        """The ranks of the roles between the shards and the workers (a coordinator)."""
        shards = self.options.ps_shards
        return list(range(shards, shards + len(self.extra_roles(self.options))))

    def payload(self, peer: int, header: List[float]) -> List[torch.Tensor]:
        """What a letter from ``peer`` carries (a shard's letters: :class:`Wire`)."""
        return self.wire_.payload(peer, header)

    def plan(self, steps_per_epoch: int, samples: int = 0) -> None:
        """The run's horizon in steps, for the schedules over training progress: every epoch (a
        stop at a step is an interruption, not the horizon: the resumed run goes on with it)."""
        self.planned = self.config.epochs * steps_per_epoch

    def micro_batch(self, is_last: bool):
        if not self.training:  # the clocks start with training, not with the set-up before it
            self.training = True
            self.started = time.perf_counter()
            self.training_started()
        return super().micro_batch(is_last)

    def training_started(self) -> None:
        """Called before the first micro-batch."""

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def observe(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss)
        self.loss_sum = self.loss_sum + torch.where(finite, loss, torch.zeros_like(loss))
        self.loss_n = self.loss_n + finite.to(torch.int64)

    def take_loss(self) -> float:
        """The mean training loss since the last call (NaN if none was finite)."""
        n = int(self.loss_n)
        loss = float(self.loss_sum) / n if n else float("nan")
        self.loss_sum, self.loss_n = 0.0, 0
        return loss

    def accumulate(self) -> None:
        """Add the parameters' gradients to ``G`` (a shard's slice each)."""
        with torch.no_grad():
            for s in self.shards:
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.mine[s]]
                if grads:
                    torch._foreach_add_(self.g_views[s], grads)

    def optimizer_step(self, local_step: Callable[[], None], optimizer: torch.optim.Optimizer) -> None:
        self.accumulate()
        local_step()
        self.steps += 1

    def buffer_payload(self, shard: int) -> List[torch.Tensor]:
        """The floating buffers of ``shard``'s slice, as one flat tensor (none if it has none)."""
        buffers = self.my_buffers[shard]
        return [torch.cat([b.detach().reshape(-1).cpu() for b in buffers])] if buffers else []

    def finish(self, status: str) -> None:
        """Tell every shard this worker is done; take the shards' goodbyes (the server's result)."""
        self.flush()
        for s in self.shards:
            self.mailbox.send(s, [DONE])
        for s in self.shards:
            letter = self.mailbox.receive([s], "goodbye", lambda l, s=s: l.peer == s and l.kind == BYE, patient=True)
            if s == 0:
                rounds, iterations, acc, loss = letter.header[1:5]
                self.server_final = {"rounds": int(rounds), "global_iterations": int(iterations),
                                     "test_acc": acc, "test_loss": loss}
                if letter.tensors:
                    self.server_final["lost"] = [int(r) for r in letter.tensors[0].tolist()]
        self.mailbox.wait_sent(timeout=self.config.timeout)
        if self.rows is not None:
            self.rows.close()

    def state_dict(self) -> Dict[str, Any]:
        """The worker's counters (the shards' state: ``server_clock``, which subclasses fill in)."""
        return {**super().state_dict(), "pushes": self.pushes, "steps": self.steps, "k_total": self.k_total,
                "wait_s": self.wait_s, "server_clock": dict(self.server_clock), "elapsed_s": self.elapsed()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pushes, self.steps, self.k_total = int(state["pushes"]), int(state["steps"]), int(state["k_total"])
        self.wait_s = float(state["wait_s"])
        self.server_clock = dict(state["server_clock"])
        self.elapsed_before = float(state["elapsed_s"])

    def summary(self) -> Dict[str, Any]:
        return {"rank": self.ctx.rank, "pushes": self.pushes, "steps": self.steps,
                "mean_k": self.k_total / max(self.pushes, 1), "wait_s": round(self.wait_s, 3),
                "train_s": round(self.elapsed() - self.wait_s, 3), "server": self.server_final}
