"""``--lars-trust-clip``: ``larc`` asks for LARC clipping, a number C for the trust-ratio cap
(what the flag has always done with a number); the run's LARS gets the matching options."""

from __future__ import annotations

import argparse
import re

import pytest
from torch import nn

from crossover_sgd.cli import build_parser, config_from_args
from crossover_sgd.errors import ConfigError
from crossover_sgd.training.optim import build_optimizer


def _config(*flags: str):
    args = build_parser().parse_args(["train", "--lars", "True", *flags])
    return config_from_args(args).validate()


@pytest.mark.parametrize("flags, larc, ratio_max", [
    ((), False, None),
    (("--lars-trust-clip", "larc"), True, None),
    (("--lars_trust_clip", "LARC"), True, None),
    (("--lars-trust-clip", "1"), False, 1.0),
    (("--lars-trust-clip", "0.5"), False, 0.5),
])
def test_flag_reaches_the_optimizer(flags, larc, ratio_max):
    optimizer = build_optimizer(nn.Linear(3, 2), _config(*flags))
    assert [(g["larc"], g["trust_ratio_max"]) for g in optimizer.param_groups] == [(larc, ratio_max)] * 2


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_bad_number_is_a_config_error_naming_it(value):
    with pytest.raises(ConfigError) as info:
        _config("--lars-trust-clip", value)
    shown = re.escape(repr(float(value)))
    assert re.search(rf"lars.trust.clip\}}? {shown} is invalid: use larc", str(info.value))


def test_word_other_than_larc_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--lars-trust-clip", "lars"])
    assert "'lars' is neither larc nor a number" in capsys.readouterr().err


def test_help_does_not_call_the_cap_larc():
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (action,) = [a for a in sub.choices["train"]._actions if "--lars-trust-clip" in a.option_strings]
    assert "larc: LARC clipping" in action.help and "(not LARC)" in action.help
