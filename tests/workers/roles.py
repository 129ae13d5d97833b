"""One rank of tests/training/test_roles.py: process roles through the real ``run_worker``.

Usage: ``roles.py MODE OUT RESULTS`` with the launcher's variables set. ``OUT`` is the run's output
folder; the value ``run_worker`` returns on this rank goes to ``RESULTS/rank{R}.pt``. Modes:

* ``central-server``: :class:`CentralServerSGD` (test-only): world rank 0 is a parameter server,
  the others train. A trainer's optimizer step sends its gradients (one flat buffer) to the
  server and copies the parameters it sends back; the server averages the trainers' gradients
  as ``g_1/k + ... + g_k/k`` in rank order and takes a plain ``torch.optim.SGD`` step.
* ``allreduce``: the built-in AllReduce-SGD (DDP, ``sync_grad`` True) with the same settings.
* ``local-alone``: :class:`LocalAloneSGD` (test-only): every rank trains alone (no communication,
  ``group_collectives = False``). After its first step each rank writes ``RESULTS/started_rank{R}``;
  rank ``$ROLES_TEST_VICTIM`` then waits to be killed, the others wait for ``RESULTS/victim_killed``
  (written by the test once the victim is dead) and train on.

Every wait is bounded (``WAIT_S``): a rank that waits longer fails instead of hanging.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
import torch.distributed as dist
from torch import nn

from crossover_sgd.algorithms import Algorithm, make_config, registry
from crossover_sgd.comm import FlatParams
from crossover_sgd.runtime.exit import exit_process
from crossover_sgd.runtime.process_group import TRAINER
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.models import build_model
from crossover_sgd.training.run import run_worker
from crossover_sgd.training.sampler import ShardSampler
from crossover_sgd.training.schedule import LRSchedule

WAIT_S = 120.0
SERVER = 0
#: The settings both runs of the comparison share (momentum and weight decay 0, a constant rate).
SHARED = dict(dataset="digits", model="small_cnn", batch_size=32, local_itr=1, epochs=2, lr=0.05, momentum=0.0,
              weight_decay=0.0, lr_schedule="constant", seed=5, device="cpu", backend="gloo", timeout=60.0,
              log_level="WARNING")


class CentralServerSGD(Algorithm):
    """A parameter server on world rank 0; the optimizer step is taken there."""

    name = "test-central-server"
    replicas_identical = True  # every trainer copies the server's parameters after every step

    @classmethod
    def roles(cls, world_size: int, options) -> List[str]:
        return ["server"] + [TRAINER] * (world_size - 1)

    # ------------------------------------------------------------------ trainer side
    def prepare(self, model: nn.Module) -> nn.Module:
        # No broadcast over the world (the server takes no part in the training group's
        # start-up): the server builds its copy with the same seed, so every copy starts equal.
        self.model = model
        self._weights = FlatParams(list(model.parameters()))  # copy mode: the received values
        return model

    def optimizer_step(self, local_step: Callable[[], None], optimizer: torch.optim.Optimizer) -> None:
        params = list(self.model.parameters())
        assert all(p.grad is not None for p in params)
        grads = FlatParams([p.grad for p in params])
        start = time.perf_counter()
        for buf in grads.pack():
            dist.send(buf, dst=SERVER)
        for buf in self._weights.buffers.values():
            dist.recv(buf, src=SERVER)
        self._weights.unpack()
        self.comm.add(grads.nbytes, self._weights.nbytes, time.perf_counter() - start)
        self.comm.rounds += 1

    # ------------------------------------------------------------------ server side
    def steps_per_epoch(self, train_len: int) -> int:
        """As the Trainer counts them: the training rank's shard in whole steps."""
        chunk = self.config.batch_size * self.config.local_itr
        return ShardSampler(train_len, 0, self.ctx.train_size, seed=self.config.seed, chunk=chunk).per_rank // chunk

    def run_role(self, model: nn.Module, env) -> Dict[str, Any]:
        assert self.ctx.role == "server" and self.ctx.rank == SERVER, self.ctx
        cfg, trainers = self.config, self.ctx.trainers
        # run_worker passes algorithm.model, which only Trainer.__init__ (prepare) fills: on a
        # non-trainer rank it is an empty nn.Module. Build the server's copy as the Trainer does.
        data = build_datasets(cfg)
        torch.manual_seed(cfg.seed)  # as the Trainer does before building its model
        model = build_model(cfg.model, data.num_classes, data.in_channels, data.image_size).to(self.ctx.device)
        params = list(model.parameters())
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                    weight_decay=cfg.weight_decay)
        per_epoch = self.steps_per_epoch(len(data.train))
        schedule = LRSchedule.from_config(cfg, per_epoch)
        steps = cfg.epochs * per_epoch  # every trainer's step count: no rank waits for a step never sent
        if cfg.stop_at_step is not None:
            steps = min(steps, cfg.stop_at_step)
        weights = FlatParams(params)
        grad_tensors = [torch.zeros_like(p) for p in params]
        averaged = FlatParams(grad_tensors, share_storage=True)  # the gradients live in its buffers
        for p, g in zip(params, grad_tensors):
            p.grad = g
        incoming = {r: [torch.empty_like(buf) for buf in averaged.buffers.values()] for r in trainers}
        for step in range(steps):
            for r in trainers:  # rank order
                for buf in incoming[r]:
                    dist.recv(buf, src=r)
            for i, target in enumerate(averaged.buffers.values()):
                total = None
                for r in trainers:  # g_1/k + ... + g_k/k, left to right
                    term = incoming[r][i] / len(trainers)
                    total = term if total is None else total + term
                target.copy_(total)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * schedule.factor(step)
            optimizer.step()
            bufs = weights.pack()
            for r in trainers:
                for buf in bufs:
                    dist.send(buf, dst=r)
            self.comm.add(weights.nbytes * len(trainers), weights.nbytes * len(trainers))
            self.comm.rounds += 1
        return {"role": "server", "steps": steps, "model_state": {k: v.clone() for k, v in model.state_dict().items()},
                "comm": self.comm.as_dict()}


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"rank {os.environ.get('RANK')}: {what} did not happen within {WAIT_S:.0f} s")
        time.sleep(0.05)


class LocalAloneSGD(Algorithm):
    """Local SGD without any communication: a family that goes on after losing a peer."""

    name = "test-local-alone"
    replicas_identical = False
    group_collectives = False
    results: Path = Path(".")

    def prepare(self, model: nn.Module) -> nn.Module:
        self.model = model  # no broadcast: nothing is ever sent (same seed, same start)
        self._first = True
        return model

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.comm.rounds += 1
        if not self._first:
            return
        self._first = False
        rank = self.ctx.rank
        (self.results / f"started_rank{rank}").touch()
        if rank == int(os.environ["ROLES_TEST_VICTIM"]):
            _wait_for(self.results / "no-such-file", "the SIGKILL of this rank")  # killed while waiting
        _wait_for(self.results / "victim_killed", "the SIGKILL of the victim")


MODES = {
    "central-server": (CentralServerSGD, dict(SHARED, algorithm=CentralServerSGD.name)),
    "allreduce": (None, dict(SHARED, algorithm="allreduce", sync_grad=True)),
    "local-alone": (LocalAloneSGD, dict(SHARED, algorithm=LocalAloneSGD.name, epochs=3, momentum=0.9,
                                        checkpoint_every=1)),
}


def main() -> None:
    mode, out, results = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)  # the same kernels in every run, whatever the machine's core count
    cls, values = MODES[mode]
    if cls is not None:
        registry.ALGORITHMS[cls.name] = cls
    LocalAloneSGD.results = results
    result = run_worker(make_config(out=str(out), **values))
    torch.save(result, results / f"rank{os.environ['RANK']}.pt")
    exit_process(0)


if __name__ == "__main__":
    main()
