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
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, ContextManager, Dict, FrozenSet

import torch
from torch import nn

from crossover_sgd.comm import CommStats, broadcast_model
from crossover_sgd.config import TrainConfig
from crossover_sgd.runtime.process_group import DistContext

__all__ = ["Algorithm"]


class Algorithm:
    """Base class: no communication except the initial broadcast of rank 0's model."""

    #: The name used by ``--algorithm``.
    name: ClassVar[str] = ""
    #: True when every rank holds the same parameters after every step (evaluation is then
    #: sharded across ranks instead of repeated on each).
    replicas_identical: ClassVar[bool] = False
    #: The TrainConfig fields of algorithm options this algorithm reads (a subclass adds its own);
    #: the others are reported as without effect (:meth:`TrainConfig.ineffective_options`).
    options: ClassVar[FrozenSet[str]] = frozenset()

    def __init__(self, ctx: DistContext, config: TrainConfig):
        self.ctx = ctx
        self.config = config
        self.comm = CommStats()
        self.model: nn.Module = nn.Module()

    def prepare(self, model: nn.Module) -> nn.Module:
        """Start every replica from rank 0's weights; return the module to train with."""
        broadcast_model(model)
        self.model = model
        return model

    def micro_batch(self, is_last: bool) -> ContextManager[Any]:
        """Context for the forward/backward of one micro-batch."""
        return contextlib.nullcontext()

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called when gradients are final, before clipping and ``optimizer.step()``."""

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after ``optimizer.step()``."""

    def flush(self) -> None:
        """Finish communication still in flight (called before evaluation and checkpoints)."""

    def eval_model(self) -> nn.Module:
        """The model whose accuracy this rank reports."""
        return self.model

    def metrics(self) -> Dict[str, float]:
        """Metrics columns of this algorithm's own (``outputs.METRIC_DEFAULTS`` fills the others)."""
        return {}

    def state_dict(self) -> Dict[str, Any]:
        return {"comm": self.comm.as_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.comm.load(state["comm"])
