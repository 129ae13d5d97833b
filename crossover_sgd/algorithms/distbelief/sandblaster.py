"""Sandblaster L-BFGS (Dean et al., NIPS 2012): batch L-BFGS driven by a coordinator, the batch's
gradient computed by replicas in small portions, the vectors kept on the server shards.

Ranks: the shards (``0 .. S-1``, :mod:`~crossover_sgd.algorithms.distbelief.sandblaster_shard`),
the coordinator (rank ``S``, :mod:`~crossover_sgd.algorithms.distbelief.coordinator`), the
replicas (the others). The batch is the first ``--lbfgs-batch`` training samples (default: all,
full-batch L-BFGS); each epoch is one ``torch.optim.LBFGS.step()`` of up to ``--lbfgs-max-iter``
iterations (``--lbfgs-lr``, ``--history-size``, ``--line-search strong_wolfe|none``), after which
every replica evaluates the model. The objective is the mean cross-entropy over the batch.

A replica does not run the training loop's SGD steps: it serves the coordinator
(:meth:`Sandblaster.drive`): for a portion of evaluation ``e`` it fetches the point of ``e`` from
the shards (once per evaluation), computes the summed loss and its gradient over the portion's
samples, sends the gradient to the shards and the loss to the coordinator. ``--slow-replicas``
(training ranks) sleep ``--slow-factor`` times each portion's compute time: stragglers on purpose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional

import torch
from torch import nn

from crossover_sgd.algorithms.distbelief.sandblaster_shard import SandblasterShard
from crossover_sgd.algorithms.options import option
from crossover_sgd.algorithms.ps.family import ServerFamily, ServerOptions
from crossover_sgd.algorithms.ps.protocol import DONE, EPOCH, FETCH, PARAMS, PORTION, READY, RESULT, STOP, TASK
from crossover_sgd.algorithms.ps.state import flat_views
from crossover_sgd.errors import ConfigError

__all__ = ["Sandblaster", "SandblasterOptions", "COORDINATOR"]

#: The role of the coordinator's rank.
COORDINATOR = "coordinator"


@dataclass
class SandblasterOptions(ServerOptions):
    portion_size: int = option(64, "sandblaster: samples per portion handed to a replica", minimum=1, metavar="N")
    lbfgs_batch: Optional[int] = option(None, "sandblaster: the batch, the first N training samples (default: all)",
                                        minimum=1, metavar="N")
    history_size: int = option(10, "sandblaster: L-BFGS history size", minimum=1)
    lbfgs_max_iter: int = option(20, "sandblaster: L-BFGS iterations per epoch (one torch LBFGS.step())", minimum=1)
    lbfgs_lr: float = option(1.0, "sandblaster: L-BFGS step length (torch's lr)", minimum=0.0)
    line_search: str = option("strong_wolfe", "sandblaster: the line search", choices=("strong_wolfe", "none"))
    slow_replicas: Optional[str] = option(None, "sandblaster: comma-separated training ranks of replicas that "
                                                "straggle on purpose", metavar="RANKS")
    slow_factor: float = option(0.0, "sandblaster: a slow replica sleeps this multiple of each portion's time",
                                minimum=0.0)

    def extra_ranks(self) -> int:
        return 1  # the coordinator


class Sandblaster(ServerFamily):
    """Sandblaster L-BFGS; see the module docstring."""

    name = "sandblaster"
    worker_word = "replica"
    options_class: ClassVar = SandblasterOptions
    group_collectives = False
    server_class = SandblasterShard
    metric_columns = {"sb_portions": float("nan")}

    @classmethod
    def extra_roles(cls, options: SandblasterOptions) -> List[str]:
        return [COORDINATOR]

    @classmethod
    def tolerates_lost_peers(cls, options: SandblasterOptions) -> bool:
        return True

    def prepare_role(self, model: nn.Module, resume_state: Optional[Dict[str, Any]] = None) -> None:
        if self.config.resume:
            raise ConfigError("{resume} is not available for {algorithm} sandblaster: start the run again")
        if self.ctx.role == COORDINATOR:
            from crossover_sgd.algorithms.distbelief.coordinator import Coordinator

            self.wire(model)  # refuses a shard count the model cannot fill, like the shards
            self.server = Coordinator(self)
        else:
            super().prepare_role(model, resume_state)

    # ----------------------------------------------------------------------------- the replica
    def prepare(self, model: nn.Module) -> nn.Module:
        if self.config.resume:
            raise ConfigError("{resume} is not available for {algorithm} sandblaster: start the run again")
        model = super().prepare(model)
        self.connect(model, ("evaluation", "portions", "fetches", "compute_s", "elapsed_s"))
        self.coordinator = self.extra_ranks()[0]
        slow = {int(r) for r in (self.options.slow_replicas or "").split(",") if r.strip()}
        self.slow = self.options.slow_factor if self.ctx.train_rank in slow else 0.0
        self.portions = self.fetches = 0
        self.compute_s = 0.0
        return model

    def plan(self, steps_per_epoch: int, samples: int = 0) -> None:
        self.samples = samples
        batch = self.options.lbfgs_batch or samples
        if samples and batch > samples:
            raise ConfigError(f"{{lbfgs_batch}} {batch} exceeds the {samples} training samples")
        if samples and self.options.portion_size > batch:
            raise ConfigError(f"{{portion_size}} {self.options.portion_size} is larger than the batch of {batch} "
                              f"samples: use at most {batch}")
        self.batch = batch

    def drive(self, trainer: Any) -> Dict[str, Any]:
        """Serve the coordinator until it stops: portions, and an evaluation at each epoch's end."""
        self.training_started()
        self.mailbox.send(self.coordinator, [READY, self.batch])
        point = None
        while True:
            letter = self.mailbox.receive([self.coordinator], "task", lambda l: l.kind in (TASK, EPOCH, STOP),
                                          patient=True)
            if letter.kind == STOP:
                break
            if letter.kind == EPOCH:
                self._fetch(-1)
                point = None
                trainer.epoch = int(letter.header[1])
                trainer.step = self.portions
                trainer._evaluate_and_record()
                trainer.checkpoint()  # this replica's own (no collective): the model is x
                self.mailbox.send(self.coordinator, [READY, self.batch])
                continue
            evaluation, portion, start, end = (int(v) for v in letter.header[1:5])
            if point != evaluation:
                self._fetch(evaluation)
                point = evaluation
            loss = self._portion(trainer, start, end)
            for s in self.shards:
                self.mailbox.send(s, [PORTION, evaluation, portion],
                                  [torch.cat([p.grad.detach().reshape(-1).cpu() for p in self.mine[s]])])
            self.mailbox.wait_sent(timeout=self.config.timeout)  # the gradient is out before the result
            self.mailbox.send(self.coordinator, [RESULT, evaluation, portion, loss])
            self.portions += 1
        final = trainer.metrics.rows[-1] if trainer.metrics.rows else None
        return {"stopped": False, "status": "finished", "step": trainer.step, "epoch": trainer.epoch,
                "final": final}

    def _fetch(self, evaluation: int) -> None:
        """The point of ``evaluation`` (``-1``: x) from every shard, into the model."""
        waited = time.perf_counter()
        for s in self.shards:
            self.mailbox.send(s, [FETCH, evaluation])
        with torch.no_grad():
            for s in self.shards:
                letter = self.mailbox.receive([s], "point", lambda l, s=s: l.peer == s and l.kind == PARAMS,
                                              patient=True)
                x, *buffers = letter.tensors
                if self.mine[s]:
                    torch._foreach_copy_(self.mine[s], flat_views(x, self.mine[s]))
                if buffers:
                    torch._foreach_copy_(self.my_buffers[s], flat_views(buffers[0], self.my_buffers[s]))
        self.fetches += 1
        self.wait_s += time.perf_counter() - waited

    def _portion(self, trainer: Any, start: int, end: int) -> float:
        """The summed loss over samples ``start .. end-1`` of the training set; its gradient in ``.grad``."""
        began = time.perf_counter()
        model = trainer.model
        inputs, targets = self._batch(trainer)
        inputs, targets = inputs[start:end], targets[start:end]
        model.zero_grad(set_to_none=False)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(inputs), targets, reduction="sum")
            loss.backward()
        spent = time.perf_counter() - began
        self.compute_s += spent
        if self.slow:
            time.sleep(self.slow * spent)
        return float(loss.detach())

    def _batch(self, trainer: Any) -> tuple:
        """The batch's inputs and targets on the device, read from the dataset once (every
        evaluation slices portions of it)."""
        if getattr(self, "_batch_tensors", None) is None:
            samples = [trainer.data.train[i] for i in range(self.batch)]
            inputs = trainer._to_device(torch.stack([torch.as_tensor(x) for x, _ in samples]))
            targets = torch.as_tensor([int(y) for _, y in samples], device=trainer.ctx.device)
            self._batch_tensors = (inputs, targets)
        return self._batch_tensors

    def finish(self, status: str) -> None:
        self.mailbox.send(self.coordinator, [DONE])
        super().finish(status)

    def flush(self) -> None:
        """Nothing in flight between the coordinator's letters."""

    def metrics(self) -> Dict[str, float]:
        return {"sb_portions": float(self.portions)}

    def summary(self) -> Dict[str, Any]:
        return {**super().summary(), "portions": self.portions, "fetches": self.fetches,
                "compute_s": round(self.compute_s, 3), "slow_factor": self.slow}
