"""Which parameters LARS scales, and a helper that splits a model into parameter groups.

A parameter is *excluded* (no trust ratio, no weight decay: plain SGD with momentum)
according to its group's ``exclude`` option:

* ``None`` (default): decided per tensor, excluded iff ``p.ndim <= 1`` (biases,
  BatchNorm/LayerNorm scales and shifts);
* ``True``: every parameter of the group is excluded;
* ``False``: no parameter of the group is excluded (1-D tensors get LARS too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

ExcludeRule = Callable[[str, Tensor], bool]


def is_excluded(param: Tensor, exclude: bool | None) -> bool:
    """Whether ``param`` is excluded from LARS scaling and weight decay in a group with ``exclude``."""
    if exclude is None:
        return param.ndim <= 1
    return exclude


def default_exclude(name: str, param: Tensor) -> bool:
    """Default rule of :func:`param_groups`: 1-D (or 0-D) tensors and anything named ``bias``."""
    return param.ndim <= 1 or name == "bias" or name.endswith(".bias")


def param_groups(model: nn.Module, *, exclude: ExcludeRule | None = None,
                 **options: Any) -> list[dict[str, Any]]:
    """Split ``model.named_parameters()`` into a LARS group and an excluded group.

    Args:
        model: the module whose parameters are split (shared parameters appear once).
        exclude: ``(name, param) -> bool`` choosing the excluded parameters;
            :func:`default_exclude` when ``None``.
        **options: extra options (``lr``, ``weight_decay``, ...) copied into both groups.

    Returns:
        Up to two groups, in this order, empty ones dropped:
        ``{"params": [...], "exclude": False, **options}`` (LARS) and
        ``{"params": [...], "exclude": True, **options}`` (plain SGD with momentum).
    """
    rule = default_exclude if exclude is None else exclude
    lars: list[Tensor] = []
    excluded: list[Tensor] = []
    for name, param in model.named_parameters():
        (excluded if rule(name, param) else lars).append(param)
    groups = []
    for params, flag in ((lars, False), (excluded, True)):
        if params:
            groups.append({**options, "params": params, "exclude": flag})
    return groups
