"""The :class:`LARS` optimizer: state, parameter bucketing, AMP protocol and the norm hook.

The math lives in :mod:`lars.functional`; see :mod:`lars` for the formulas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .functional import coef_dtype, multi_tensor_lars_, stacked_norms, to_device
from .groups import is_excluded
from .options import DEFAULTS, STUDY_DEFAULTS, validate_options

NormHook = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(weight_norms_sq, grad_norms_sq) -> (weight_norms_sq, grad_norms_sq)``, see :meth:`LARS.set_norm_hook`."""


@dataclass
class _Bucket:
    """Parameters of one group on one (device, dtype), LARS ones first."""

    params: list[Tensor] = field(default_factory=list)
    excluded: list[Tensor] = field(default_factory=list)
    weight_norms: Tensor | None = None
    grad_norms: Tensor | None = None

    @property
    def all_params(self) -> list[Tensor]:
        return self.params + self.excluded


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum, multi-tensor and sync-free.

    For every parameter that is not excluded (see :mod:`lars.groups`; by default
    every tensor with ``ndim <= 1``), the step is scaled by the trust ratio
    ``t = eta * ||w|| / (||g|| + weight_decay * ||w|| + eps)`` (1 when a norm is 0),
    optionally clipped (see below), and weight decay is applied inside the scaled update
    (``d = g + weight_decay * w``). Excluded parameters get plain SGD with momentum and no
    weight decay (``t = 1``, ``d = g``). Then

    * ``momentum_form="mxnet"`` (the study's): ``buf = m * buf + lr * t * d``; ``w -= buf``
    * ``momentum_form="pytorch"``: ``buf = m * buf + t * d``; ``w -= lr * buf``

    Nesterov replaces the step by ``lr * t * d + m * buf`` (MXNet) or
    ``lr * (t * d + m * buf)`` (PyTorch). ``momentum_correction=True`` (MXNet form only)
    multiplies ``m`` by ``lr_t / lr_prev`` (``lr_prev``: the lr of the buffer's last
    applied update), which makes the MXNet form equal to the PyTorch form.

    Clipping (at most one of the two):

    * ``larc=True``: LARC clipping (NVIDIA apex ``LARC(clip=True)``, timm
      ``Lars(trust_clip=True)``): ``t`` is replaced by ``min(t / lr, 1)``, so the local lr is
      ``min(t, lr)``: the trust ratio itself is the local lr, capped at the global lr
      (:func:`lars.larc_ratio`; 1, i.e. local lr ``lr``, where a norm is 0).
    * ``trust_ratio_max=c``: a cap on the trust ratio, ``t = min(t, c)``, so the local lr is
      ``lr * min(t, c)``. This is *not* LARC (``c = 1`` caps the local lr at ``lr`` but
      leaves it ``lr * t``, not ``t``, below the cap).

    All options are per parameter group: ``lr``, ``momentum``, ``weight_decay``, ``eta``,
    ``eps``, ``nesterov``, ``larc``, ``trust_ratio_max``, ``momentum_form``,
    ``momentum_correction`` and ``exclude`` (``None``: by ``ndim``; ``True``/``False``: the
    whole group). ``lr`` must be a Python number. Bad values raise ``ValueError``.

    ``step()`` reads no tensor on the host. It supports ``torch.amp.GradScaler``
    natively (``_step_supports_amp_scaling``): it takes ``grad_scale`` and ``found_inf``
    (keywords, or the attributes GradScaler sets), takes trust ratios from unscaled
    gradients without unscaling ``p.grad`` in place, and on ``found_inf != 0`` leaves
    parameters, momentum buffers, ``last_lr`` and ``step`` unchanged by tensor masking
    (the unusable gradients of such a step are zeroed in place).
    ``scaler.unscale_(opt)`` before ``scaler.step(opt)`` works as well.

    State per parameter: ``step`` (0-D float32), ``momentum_buffer`` (if momentum > 0),
    ``last_lr`` (0-D, with momentum correction).
    """

    _step_supports_amp_scaling = True

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float, *,
                 momentum: float = DEFAULTS["momentum"],
                 weight_decay: float = DEFAULTS["weight_decay"],
                 eta: float = DEFAULTS["eta"],
                 eps: float = DEFAULTS["eps"],
                 nesterov: bool = DEFAULTS["nesterov"],
                 larc: bool = DEFAULTS["larc"],
                 trust_ratio_max: float | None = DEFAULTS["trust_ratio_max"],
                 momentum_form: str = DEFAULTS["momentum_form"],
                 momentum_correction: bool = DEFAULTS["momentum_correction"],
                 exclude: bool | None = DEFAULTS["exclude"]) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, eps=eps,
                        nesterov=nesterov, larc=larc, trust_ratio_max=trust_ratio_max,
                        momentum_form=momentum_form,
                        momentum_correction=momentum_correction, exclude=exclude)
        validate_options(defaults)
        if params is None or isinstance(params, (Tensor, str, bytes)) or not hasattr(params, "__iter__"):
            raise TypeError(f"LARS: params={params!r:.60} is not an iterable of tensors or parameter groups: "
                            "pass model.parameters() or a list of dicts with a 'params' key")
        self._norm_hook: NormHook | None = None
        super().__init__(params, defaults)

    @classmethod
    def study_preset(cls, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float,
                     **overrides: Any) -> LARS:
        """LARS with the study's settings (:data:`lars.STUDY_DEFAULTS`), ``overrides`` on top."""
        return cls(params, lr, **{**STUDY_DEFAULTS, **overrides})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        validate_options({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def set_norm_hook(self, hook: NormHook | None) -> None:
        """Install (or remove, with ``None``) the norm hook.

        Contract: when at least one LARS (non-excluded) parameter has a gradient,
        ``step()`` calls ``hook(weight_norms_sq, grad_norms_sq)`` exactly once, before
        any update, with two 1-D tensors of equal length K: the squared L2 norms of
        those parameters and of their *unscaled* gradients, in the order of
        :meth:`lars_parameters`, on the device of the first of them, dtype float32
        (float64 if any such parameter is float64). It must return two tensors of
        the same shape (any device and floating dtype); the trust ratios are then
        computed from their square roots. The order is the same on every rank that
        holds the same model with gradients for the same parameters, so the hook can
        replace the local norms with one bucketed collective per step. On a step that
        GradScaler skips (``found_inf != 0``) the norms may be inf or NaN; the step is
        masked out anyway. To keep ``step()`` free of host syncs, the hook should not
        read tensor values on the host either.
        """
        if hook is not None and not callable(hook):
            raise ValueError(f"LARS: invalid norm hook {hook!r}; expected a callable or None")
        self._norm_hook = hook

    def lars_parameters(self) -> list[Tensor]:
        """The LARS parameters that currently have a gradient, in the norm hook's order."""
        return [p for group in self.param_groups for bucket in self._buckets(group)
                for p in bucket.params]

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load state; keeps ``last_lr`` in float32 (torch casts it to the parameter dtype).

        A state saved before ``trust_clip`` was renamed loads with the same meaning: its
        ``trust_clip`` becomes ``trust_ratio_max`` (and ``larc`` is False).
        """
        state_dict = {**state_dict,
                      "param_groups": [_upgrade_group(g) for g in state_dict["param_groups"]]}
        saved_last_lrs = {}
        for saved_group, group in zip(state_dict["param_groups"], self.param_groups):
            for saved_id, param in zip(saved_group["params"], group["params"]):
                value = state_dict["state"].get(saved_id, {}).get("last_lr")
                if isinstance(value, Tensor):
                    saved_last_lrs[param] = value
        super().load_state_dict(state_dict)  # type: ignore[arg-type]
        for param, value in saved_last_lrs.items():
            self.state[param]["last_lr"] = value.to(param.device, coef_dtype(param.dtype))

    def _buckets(self, group: dict[str, Any]) -> list[_Bucket]:
        """Parameters of ``group`` with a gradient, bucketed by (device, dtype) in first-seen order."""
        buckets: dict[tuple[torch.device, torch.dtype], _Bucket] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("LARS does not support sparse gradients")
            bucket = buckets.setdefault((p.device, p.dtype), _Bucket())
            (bucket.excluded if is_excluded(p, group["exclude"]) else bucket.params).append(p)
        return list(buckets.values())

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        elif state["step"].device != p.device:
            state["step"] = state["step"].to(p.device)
        if group["momentum"] != 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["momentum_correction"] and "last_lr" not in state:
            state["last_lr"] = torch.full((), group["lr"], dtype=coef_dtype(p.dtype), device=p.device)
        return state

    def _compute_norms(self, plans: list[list[_Bucket]], grad_scale: Tensor | None) -> None:
        """Fill every bucket's weight and unscaled gradient norms, through the hook if set."""
        buckets = [b for plan in plans for b in plan if b.params]
        for b in buckets:
            b.weight_norms = stacked_norms(b.params)
            b.grad_norms = stacked_norms([p.grad for p in b.params])
            if grad_scale is not None:
                inv = to_device(grad_scale, b.grad_norms.device, torch.float64).reciprocal()
                b.grad_norms = b.grad_norms * inv.to(b.grad_norms.dtype)
        if self._norm_hook is None or not buckets:
            return
        device = buckets[0].params[0].device
        w_sq = torch.cat([to_device(b.weight_norms, device) for b in buckets]).square()
        g_sq = torch.cat([to_device(b.grad_norms, device) for b in buckets]).square()
        new_w_sq, new_g_sq = self._norm_hook(w_sq, g_sq)
        for name, old, new in (("weight", w_sq, new_w_sq), ("grad", g_sq, new_g_sq)):
            if not isinstance(new, Tensor) or new.shape != old.shape:
                raise ValueError(f"LARS: the norm hook returned {name} norms of shape "
                                 f"{getattr(new, 'shape', type(new))}; expected a tensor of shape "
                                 f"{tuple(old.shape)}")
        sizes = [len(b.params) for b in buckets]
        for b, w, g in zip(buckets, new_w_sq.split(sizes), new_g_sq.split(sizes)):
            dev, dtype = b.params[0].device, b.weight_norms.dtype
            b.weight_norms = to_device(w, dev, dtype).sqrt()
            b.grad_norms = to_device(g, dev, dtype).sqrt()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *,
             grad_scale: Tensor | None = None, found_inf: Tensor | None = None) -> Any:
        """Perform one optimisation step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
            grad_scale: 0-D tensor by which the gradients are multiplied (AMP); they are
                unscaled on the fly, not in place. Defaults to the
                ``grad_scale`` attribute GradScaler sets, if any.
            found_inf: 0-D tensor, nonzero when some gradient is not finite: the step
                then changes no parameter or optimizer state (the gradients, unusable,
                are zeroed). Defaults to GradScaler's ``found_inf`` attribute.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if grad_scale is None:
            grad_scale = getattr(self, "grad_scale", None)
        if found_inf is None:
            found_inf = getattr(self, "found_inf", None)

        for group in self.param_groups:
            validate_options(group)
        plans = [self._buckets(group) for group in self.param_groups]
        self._compute_norms(plans, grad_scale)

        for group, plan in zip(self.param_groups, plans):
            for bucket in plan:
                params = bucket.all_params
                states = [self._init_state(p, group) for p in params]
                device = params[0].device
                multi_tensor_lars_(
                    params, [p.grad for p in params],
                    [s["momentum_buffer"] for s in states] if group["momentum"] != 0 else None,
                    _or_empty(bucket.weight_norms, device), _or_empty(bucket.grad_norms, device),
                    lr=group["lr"], momentum=group["momentum"],
                    weight_decay=group["weight_decay"], eta=group["eta"], eps=group["eps"],
                    nesterov=group["nesterov"], momentum_form=group["momentum_form"],
                    larc=group["larc"], trust_ratio_max=group["trust_ratio_max"],
                    last_lrs=[s["last_lr"] for s in states] if group["momentum_correction"] else None,
                    inv_grad_scale=(None if grad_scale is None
                                    else to_device(grad_scale, device, torch.float64).reciprocal()),
                    found_inf=found_inf,
                )
                steps = [s["step"] for s in states]
                if found_inf is None:
                    torch._foreach_add_(steps, 1.0)
                else:
                    taken = (to_device(found_inf, device) == 0).to(torch.float32)
                    torch._foreach_add_(steps, [taken] * len(steps))
        return loss


def _upgrade_group(group: Mapping[str, Any]) -> dict[str, Any]:
    """A saved group with the options of this version (``trust_clip`` was the ratio cap)."""
    group = dict(group)
    if "trust_clip" in group:
        group.setdefault("trust_ratio_max", group.pop("trust_clip"))
        group.setdefault("larc", False)
    return group


def _or_empty(norms: Tensor | None, device: torch.device) -> Tensor:
    return norms if norms is not None else torch.empty(0, device=device)
