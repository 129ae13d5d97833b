"""Learning-rate schedules equal their formulas at chosen steps."""

from __future__ import annotations

import math

import pytest

from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
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


def test_step_size_decays_every_step_size_optimizer_steps():
    """The original peer-to-peer code's StepLR: gamma ** (step // step_size), milestones unused."""
    cfg = TrainConfig(lr_schedule="step", epochs=200, step_size=410, gamma=0.9, step_milestones=(1, 2))
    s = LRSchedule.from_config(cfg, 100)
    assert s.factor(0) == 1.0 and s.factor(409) == 1.0
    assert s.factor(410) == pytest.approx(0.9) and s.factor(819) == pytest.approx(0.9)
    assert s.factor(820) == pytest.approx(0.81) and s.factor(4100) == pytest.approx(0.9 ** 10)
    warm = LRSchedule.from_config(TrainConfig(lr_schedule="step", epochs=20, warmup_epochs=1, step_size=5,
                                              gamma=0.5), 10)
    assert warm.factor(4) == pytest.approx(0.5) and warm.factor(9) == 1.0  # linear warmup over 10 steps
    assert warm.factor(10) == pytest.approx(0.5 ** 2) and warm.factor(15) == pytest.approx(0.5 ** 3)
    assert TrainConfig(step_size=410).ineffective_options() == [
        "--step-size 410 (only the step schedule uses it; the schedule is cosine)"]
    assert TrainConfig(lr_schedule="step", step_size=4, step_milestones=(5,)).ineffective_options() == [
        "--step-milestones 5 (--step-size replaces it)"]
    assert TrainConfig(lr_schedule="step", gamma=0.5).ineffective_options() == [
        "--gamma 0.5 (only the step schedule with --step-size uses it)"]


@pytest.mark.parametrize("values, words", [(dict(step_size=0), "--step-size 0 is invalid: use an integer >= 1"),
                                           (dict(gamma=0.0), "--gamma 0.0 is invalid: use 0 < value <= 1"),
                                           (dict(gamma=1.5), "--gamma 1.5 is invalid")])
def test_step_size_and_gamma_checks(values, words):
    with pytest.raises(ConfigError) as info:
        TrainConfig(lr_schedule="step", **values).validate()
    assert words in info.value.render()
