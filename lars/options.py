"""Hyperparameters of :class:`lars.LARS`: defaults, the study's preset and validation.

Every per-group option is checked by :func:`validate_options`, which raises a
:class:`ValueError` whose one-line message names the offending option, its value
and what is accepted, e.g. ``LARS: invalid lr=-0.1; expected a finite number >= 0``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

MXNET: Final = "mxnet"
"""Momentum form with the learning rate inside the buffer (the study's form)."""
PYTORCH: Final = "pytorch"
"""Momentum form with the learning rate applied outside the buffer."""
MOMENTUM_FORMS: Final = (MXNET, PYTORCH)

DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "momentum": 0.9,
        "weight_decay": 0.0,
        "eta": 0.001,
        "eps": 1e-9,
        "nesterov": False,
        "larc": False,
        "trust_ratio_max": None,
        "momentum_form": MXNET,
        "momentum_correction": False,
        "exclude": None,
    }
)
"""Generic constructor defaults (``lr`` has none and must be given)."""

STUDY_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "eta": 0.0025,
        "momentum": 0.96,
        "weight_decay": 5e-5,
        "eps": 1e-9,
        "momentum_form": MXNET,
    }
)
"""Settings of the published Crossover-SGD runs (ResNet-50/ImageNet, ``--lars_coef 0.0025``)."""


def _fail(name: str, value: Any, accepted: str) -> ValueError:
    return ValueError(f"LARS: invalid {name}={value!r}; expected {accepted}")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_real(name: str, value: Any, *, lower: float, lower_inclusive: bool = True,
                upper: float | None = None) -> None:
    if upper is None:
        accepted = f"a finite number {'>=' if lower_inclusive else '>'} {lower:g}"
    else:
        accepted = f"a number with {lower:g} <= {name} < {upper:g}"
    if not _is_real(value) or not math.isfinite(value):
        raise _fail(name, value, accepted)
    below = value < lower if lower_inclusive else value <= lower
    if below or (upper is not None and value >= upper):
        raise _fail(name, value, accepted)


def _check_bool(name: str, value: Any, *, allow_none: bool = False) -> None:
    if isinstance(value, bool) or (allow_none and value is None):
        return
    raise _fail(name, value, "True, False or None" if allow_none else "True or False")


def validate_options(options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` (one line) for the first invalid option in ``options``.

    Checks the keys it knows and ignores the others (``params`` and user extras).
    """
    if "lr" in options:
        _check_real("lr", options["lr"], lower=0.0)
    if "eta" in options:  # eta = 0 would make every trust ratio 0: LARS tensors would never move
        _check_real("eta", options["eta"], lower=0.0, lower_inclusive=False)
    if "momentum" in options:
        _check_real("momentum", options["momentum"], lower=0.0, upper=1.0)
    if "weight_decay" in options:
        _check_real("weight_decay", options["weight_decay"], lower=0.0)
    if "eps" in options:
        _check_real("eps", options["eps"], lower=0.0)
    if "trust_clip" in options:
        raise ValueError(f"LARS: trust_clip={options['trust_clip']!r} is no longer an option: "
                         "it capped the trust ratio (local lr lr * min(t, c)), now "
                         "trust_ratio_max=c; for LARC clipping (local lr min(t, lr)) use larc=True")
    if "larc" in options:
        _check_bool("larc", options["larc"])
    cap = options.get("trust_ratio_max")
    if cap is not None:
        _check_real("trust_ratio_max", cap, lower=0.0, lower_inclusive=False)
        if options.get("larc"):
            raise _fail("trust_ratio_max", cap,
                        "None with larc=True (LARC already caps the local lr at lr; choose one)")
    for name in ("nesterov", "momentum_correction"):
        if name in options:
            _check_bool(name, options[name])
    if "exclude" in options:
        _check_bool("exclude", options["exclude"], allow_none=True)
    form = options.get("momentum_form", MXNET)
    if form not in MOMENTUM_FORMS:
        raise _fail("momentum_form", form, " or ".join(repr(f) for f in MOMENTUM_FORMS))
    if options.get("momentum_correction") and form != MXNET:
        raise _fail("momentum_correction", True,
                    f"False with momentum_form={form!r} (the correction only applies to 'mxnet')")
    if options.get("nesterov") and options.get("momentum", 0.0) == 0:
        raise _fail("nesterov", True, "False when momentum is 0 (Nesterov needs momentum > 0)")
