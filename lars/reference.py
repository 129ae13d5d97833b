"""Slow per-parameter LARS: the reference the tests and the benchmark check against.

Deliberately plain and independent of :mod:`lars.functional`: one parameter at a
time, norms read to the host with ``.item()`` and the trust ratio computed in
Python floats. It implements the same options as :class:`lars.LARS` (both momentum
forms, momentum correction, Nesterov, LARC clipping and the trust-ratio cap, exclusion)
but neither GradScaler's ``grad_scale``/``found_inf`` protocol nor the norm hook. Do not
use it for training: it synchronises with the device for every parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .groups import is_excluded
from .options import DEFAULTS, MXNET, validate_options


class ReferenceLARS(Optimizer):
    """Per-parameter LARS; same constructor and options as :class:`lars.LARS`."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float,
                 **options: Any) -> None:
        defaults = {**DEFAULTS, **options, "lr": lr}
        validate_options(defaults)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            mxnet = group["momentum_form"] == MXNET
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if is_excluded(p, group["exclude"]):
                    trust, d = 1.0, p.grad.clone()
                else:
                    w_norm, g_norm = p.norm().item(), p.grad.norm().item()
                    if w_norm == 0.0 or g_norm == 0.0:
                        trust = 1.0
                    else:
                        trust = group["eta"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                        if group["larc"]:  # local lr min(trust, lr)
                            trust = min(trust / lr, 1.0) if lr > 0 else 1.0
                    if group["trust_ratio_max"] is not None:
                        trust = min(trust, group["trust_ratio_max"])
                    d = p.grad + wd * p
                coef = lr * trust if mxnet else trust
                if m != 0.0:
                    factor = m
                    if group["momentum_correction"]:
                        last_lr = state.get("last_lr", lr)
                        factor = m * lr / last_lr if last_lr > 0 else m
                        state["last_lr"] = lr
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(factor).add_(d, alpha=coef)
                    update = d * coef + m * buf if group["nesterov"] else buf
                else:
                    update = d * coef
                p.sub_(update if mxnet else lr * update)
                state["step"] = state.get("step", 0) + 1
        return loss
