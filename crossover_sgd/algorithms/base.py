"""The one interface every communication algorithm implements.

The training loop drives an :class:`Algorithm` like this, and knows nothing else about it::

    train_model = algorithm.prepare(model)          # once, before training
    for each optimizer step:
        for each of the local_itr micro-batches:
            with algorithm.micro_batch(is_last):     # e.g. DDP's no_sync on all but the last
                loss(train_model(x), y).backward()
        algorithm.before_step(optimizer)             # gradients are final: e.g. average them
        (clip gradients) ; optimizer.step()
        algorithm.after_step(optimizer)              # parameters updated: e.g. gossip them
    algorithm.flush(); model_to_evaluate = algorithm.eval_model()   # before evaluation / checkpoints

An algorithm counts its traffic in ``self.comm`` (bytes sent/received, seconds, rounds).

**Roles.** :meth:`Algorithm.roles` says what each rank of the world is: ``"trainer"`` (runs the
training loop above) or a role of the algorithm's own (a parameter server, a coordinator), whose
loop is :meth:`Algorithm.run_role`. The trainers form the *training group* (``ctx.train_group``):
sampling, evaluation, checkpoints, preemption and metrics work over it. An algorithm may take the
local optimizer step over (:meth:`Algorithm.optimizer_step`: a server-side optimizer), and one
that must go on after losing a peer sets ``group_collectives = False``: the loop then evaluates,
checkpoints and stops on each trainer alone, with no collective over the training group.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Dict, List, Optional, Type

import torch
from torch import nn

from crossover_sgd.algorithms.options import AlgorithmOptions
from crossover_sgd.comm import CommStats, broadcast_model
from crossover_sgd.config import TrainConfig
from crossover_sgd.runtime.process_group import TRAINER, DistContext

__all__ = ["Algorithm", "RoleEnv", "TRAINER"]


@dataclass(frozen=True)
class RoleEnv:
    """What the training layer gives a rank of another role (:meth:`Algorithm.run_role`): the
    run's output folder, and the evaluation of a model on the validation set
    (``evaluate(model) -> {"val_loss": .., "val_acc": ..}``)."""

    out: Path
    evaluate: Callable[[nn.Module], Dict[str, float]]


class Algorithm:
    """Base class: no communication except the initial broadcast of rank 0's model."""

    #: The name used by ``--algorithm``.
    name: ClassVar[str] = ""
    #: True when every rank holds the same parameters after every step (evaluation is then
    #: sharded across ranks instead of repeated on each).
    replicas_identical: ClassVar[bool] = False
    #: The options this algorithm reads (a dataclass: :mod:`crossover_sgd.algorithms.options`);
    #: options of other algorithms set by the user are reported as without effect.
    options_class: ClassVar[Type[AlgorithmOptions]] = AlgorithmOptions
    #: Metrics columns of this algorithm's own, with the value the other algorithms write.
    metric_columns: ClassVar[Dict[str, float]] = {}
    #: False: the training loop uses no collective over the training group (a family that goes on
    #: after a lost peer): each trainer evaluates, checkpoints and stops alone.
    group_collectives: ClassVar[bool] = True

    def __init__(self, ctx: DistContext, config: TrainConfig, out: Optional[Path] = None):
        self.ctx = ctx
        self.config = config
        self.out = out  # the run's output folder (None: none, e.g. in a unit test)
        self.options = self.options_of(config)
        self.comm = CommStats()
        self.model: nn.Module = nn.Module()

    @classmethod
    def options_of(cls, config: TrainConfig) -> AlgorithmOptions:
        """This algorithm's options in ``config`` (its defaults where the config holds none)."""
        return cls.options_class.from_values(config.options.values if config.options is not None else {})

    @classmethod
    def roles(cls, world_size: int, options: AlgorithmOptions) -> List[str]:
        """The role of each rank of the world (default: every rank trains)."""
        return [TRAINER] * world_size

    def run_role(self, model: nn.Module, env: RoleEnv) -> Dict[str, Any]:
        """The loop of a rank whose role is not ``trainer`` (``self.ctx.role``), given the run's
        initial model; returns this rank's result (what ``run_worker`` returns on it)."""
        raise NotImplementedError(f"{self.name} has no role {self.ctx.role!r}")

    def prepare_role(self, model: nn.Module, resume_state: Optional[Dict[str, Any]] = None) -> None:
        """On a rank of another role, at the point where the trainers call :meth:`prepare`
        (before any file is written): set the role up (collective calls the trainers' ``prepare``
        makes too, such as creating process groups) and refuse what it cannot run (ConfigError).
        ``resume_state``: with ``--resume``, the first trainer's checkpoint (its model, its
        algorithm's :meth:`state_dict`)."""

    def plan(self, steps_per_epoch: int, samples: int = 0) -> None:
        """Told by the training loop once its steps per epoch (and its training samples) are known;
        may refuse them (ConfigError: no file is written yet)."""

    def drive(self, trainer: Any) -> Optional[Dict[str, Any]]:
        """An algorithm that is not a loop of SGD steps runs the trainer itself and returns what
        :meth:`Trainer.fit` returns (e.g. Sandblaster's replicas, which compute what a
        coordinator hands out); None: the training loop runs as usual."""
        return None

    def observe(self, loss: torch.Tensor) -> None:
        """Called with each micro-batch's (detached) training loss."""

    def prepare(self, model: nn.Module) -> nn.Module:
        """Start every replica from the first trainer's weights; return the module to train with."""
        broadcast_model(model, src=self.ctx.trainers[0], group=self.ctx.train_group)
        self.model = model
        return model

    def micro_batch(self, is_last: bool) -> ContextManager[Any]:
        """Context for the forward/backward of one micro-batch."""
        return contextlib.nullcontext()

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called when gradients are final, before clipping and ``optimizer.step()``."""

    def optimizer_step(self, local_step: Callable[[], None], optimizer: torch.optim.Optimizer) -> None:
        """Take the optimizer step: by default the local one (``local_step``, with the precision
        policy's scaling and skipping); an algorithm with a server-side optimizer replaces it."""
        local_step()

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after ``optimizer.step()``."""

    def finish(self, status: str) -> None:
        """Called on every trainer when its loop ends (``status``: finished, stopped or preempted),
        before the summary: e.g. tell a server rank to stop serving."""

    def flush(self) -> None:
        """Finish communication still in flight (called before evaluation and checkpoints)."""

    def eval_model(self) -> nn.Module:
        """The model whose accuracy this rank reports."""
        return self.model

    def metrics(self) -> Dict[str, float]:
        """This algorithm's values of its :attr:`metric_columns`."""
        return {}

    def node_label(self) -> Optional[str]:
        """The name of this trainer's per-node CSV and summary (``nodes/{label}.csv``), for an
        algorithm whose trainers are nodes of their own (None: no per-node outputs)."""
        return None

    def summary(self) -> Dict[str, Any]:
        """This trainer's part of the run's summary (e.g. the neighbours it lost)."""
        return {}

    @classmethod
    def tolerates_lost_peers(cls, options: AlgorithmOptions) -> bool:
        """Whether the other ranks go on when one dies (the local launcher then lets them)."""
        return False

    @classmethod
    def launch_env(cls, options: AlgorithmOptions) -> Dict[str, str]:
        """Launcher variables this algorithm sets itself before the process group starts (a node
        started by hand: its rank and the rendezvous from its own files); none by default."""
        return {}

    def state_dict(self) -> Dict[str, Any]:
        return {"comm": self.comm.as_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.comm.load(state["comm"])
