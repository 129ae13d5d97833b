"""Learning-rate schedules equal their formulas at chosen steps."""

from __future__ import annotations

import math

import pytest

from crossover_sgd.config import TrainConfig
from crossover_sgd.training.schedule import LRSchedule


def study_poly(steps_per_epoch=10, epochs=90, warmup=36):
    cfg = TrainConfig(lr_schedule="poly", epochs=epochs, warmup_epochs=warmup, poly_power=2.2,
                      poly_end=0.0025, poly_hold_epochs=2)
    return LRSchedule.from_config(cfg, steps_per_epoch)


def test_warmup_is_linear_per_step():
    s = study_poly()
    assert s.factor(0) == pytest.approx(1 / 360)
    assert s.factor(179) == pytest.approx(0.5)
    assert s.factor(359) == pytest.approx(1.0)


def test_poly_decay_midpoint_end_and_held_epochs():
    s = study_poly()
    span = (90 - 36 - 2) * 10
    assert s.factor(360) == pytest.approx(1.0)  # first step after warmup
    mid = 360 + span // 2
    assert s.factor(mid) == pytest.approx((1 - 0.0025) * 0.5 ** 2.2 + 0.0025)
    assert s.factor(360 + span) == pytest.approx(0.0025)
    for step in range(360 + span, 900):  # the last 2 epochs stay at the end value
        assert s.factor(step) == pytest.approx(0.0025)


def test_cosine_and_step_and_constant():
    cfg = TrainConfig(lr_schedule="cosine", epochs=10, warmup_epochs=0)
    cos = LRSchedule.from_config(cfg, 10)
    assert cos.factor(0) == 1.0 and cos.factor(50) == pytest.approx(0.5)
    assert cos.factor(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    step = LRSchedule.from_config(TrainConfig(lr_schedule="step", epochs=90, step_milestones=(30, 60),
                                              step_gamma=0.1), 5)
    assert step.factor(149) == 1.0 and step.factor(150) == pytest.approx(0.1)
    assert step.factor(300) == pytest.approx(0.01)
    assert LRSchedule.from_config(TrainConfig(lr_schedule="constant"), 7).factor(123) == 1.0
