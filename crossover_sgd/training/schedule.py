"""Learning-rate schedules as a pure function of the optimizer step.

``factor(step)`` multiplies the base learning rate. Linear warmup over ``warmup_steps``
(``(s+1)/W``), then one of:

* ``constant``: 1;
* ``step``: ``gamma ** (number of milestones <= epoch)``, or with ``step_size`` (the original
  peer-to-peer code's StepLR) ``gamma ** (step // step_size)``, ``step`` counting optimizer steps;
* ``cosine``: ``0.5 (1 + cos(pi t / T))`` over the remaining steps;
* ``poly`` (the study's): ``(1 - end) (1 - t/T) ** power + end`` with ``T`` = total steps minus
  warmup minus ``hold`` epochs; the last ``hold`` epochs stay at ``end``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from crossover_sgd.config import TrainConfig

__all__ = ["LRSchedule"]


@dataclass(frozen=True)
class LRSchedule:
    kind: str
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int = 0
    power: float = 2.2
    end: float = 0.0025
    hold_steps: int = 0
    milestones: Sequence[int] = ()
    gamma: float = 0.1
    step_size: Optional[int] = None

    @classmethod
    def from_config(cls, config: TrainConfig, steps_per_epoch: int) -> "LRSchedule":
        return cls(kind=config.lr_schedule, steps_per_epoch=steps_per_epoch,
                   total_steps=config.epochs * steps_per_epoch,
                   warmup_steps=round(config.warmup_epochs * steps_per_epoch),
                   power=config.poly_power, end=config.poly_end,
                   hold_steps=(config.poly_hold_epochs * steps_per_epoch if config.lr_schedule == "poly" else 0),
                   milestones=tuple(config.step_milestones), step_size=config.step_size,
                   gamma=config.step_gamma if config.step_size is None else config.gamma)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = step - self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "step" and self.step_size is not None:
            return self.gamma ** (step // self.step_size)
        if self.kind == "step":
            epoch = step // self.steps_per_epoch
            return self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(t, span) / span))
        if self.kind == "poly":
            span = max(1, self.total_steps - self.warmup_steps - self.hold_steps)
            return (1.0 - self.end) * (1.0 - min(t, span) / span) ** self.power + self.end
        raise ValueError(f"unknown schedule {self.kind!r}")
