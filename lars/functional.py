"""Multi-tensor LARS math (``torch._foreach_*``), free of host synchronisation.

Nothing here reads a tensor value on the host: no ``.item()``, no ``float(t)``, no
Python branch on tensor data. Per-tensor factors (trust ratios, the momentum
correction) are computed as small device vectors and applied with foreach ops that
take one 0-D tensor per list element; the zero-norm fallback uses ``torch.where``
and a skipped mixed-precision step (``found_inf != 0``) is masked out with tensor
ops: its non-finite gradients are cleared with ``masked_fill_`` and every factor is
zeroed (the momentum factor set to 1). Updates are accumulated in place, with no
temporary the size of the model. All tensors of one call must share a device and a
dtype.
"""

from __future__ import annotations

from typing import List, Union, overload

import torch
from torch import Tensor

from .options import MXNET

# A factor applied per tensor: one Python number, one 0-D tensor for every tensor
# of the list, or a list with one 0-D tensor per tensor.
Factor = Union[float, Tensor, List[Tensor]]  # typing.Union: evaluated at runtime (py3.9)


@overload
def trust_ratio(w_norm: float, g_norm: float, wd: float, eta: float, eps: float) -> float: ...
@overload
def trust_ratio(w_norm: Tensor | float, g_norm: Tensor | float, wd: float, eta: float,
                eps: float) -> Tensor: ...


def trust_ratio(w_norm: Tensor | float, g_norm: Tensor | float, wd: float, eta: float,
                eps: float) -> Tensor | float:
    """LARS trust ratio ``eta * ||w|| / (||g|| + wd * ||w|| + eps)``; 1 where a norm is 0.

    Works elementwise on tensors (no host sync; NaN norms give NaN) and on Python
    numbers (returns a float). Example: ``trust_ratio(1.234, 5.678, 1e-4, 1e-3, 1e-8)``
    is ``0.000217325...``.
    """
    if not isinstance(w_norm, Tensor) and not isinstance(g_norm, Tensor):
        w, g = float(w_norm), float(g_norm)
        if w == 0.0 or g == 0.0:
            return 1.0
        return eta * w / (g + wd * w + eps)
    like = w_norm if isinstance(w_norm, Tensor) else g_norm
    w = torch.as_tensor(w_norm, dtype=like.dtype, device=like.device)
    g = torch.as_tensor(g_norm, dtype=like.dtype, device=like.device)
    ratio = eta * w / (g + wd * w + eps)
    return torch.where((w == 0) | (g == 0), torch.ones_like(ratio), ratio)


@overload
def larc_ratio(w_norm: float, g_norm: float, wd: float, eta: float, eps: float,
               lr: float) -> float: ...
@overload
def larc_ratio(w_norm: Tensor | float, g_norm: Tensor | float, wd: float, eta: float, eps: float,
               lr: float) -> Tensor: ...


def larc_ratio(w_norm: Tensor | float, g_norm: Tensor | float, wd: float, eta: float, eps: float,
               lr: float) -> Tensor | float:
    """LARC's clipped ratio ``min(t / lr, 1)``, ``t = eta * ||w|| / (||g|| + wd * ||w|| + eps)``.

    It multiplies the global learning rate: the local lr is ``lr * larc_ratio = min(t, lr)``
    (NVIDIA apex ``LARC(clip=True)``: ``adaptive_lr = min(adaptive_lr / lr, 1)``). Where a norm
    is 0 it is 1 (no adaptation: the local lr is ``lr``, as in apex), and it is 1 when ``lr``
    is 0 (the limit of ``min(t / lr, 1)``; nothing moves then anyway). Works elementwise on
    tensors (no host sync; NaN norms give NaN) and on Python numbers (returns a float).
    Example: ``larc_ratio(1.0, 2.0, 0.0, 0.1, 0.0, lr=0.1)`` is ``0.5`` (local lr 0.05), and
    ``1.0`` with ``lr=0.01`` (local lr 0.01).
    """
    if not isinstance(w_norm, Tensor) and not isinstance(g_norm, Tensor):
        w, g = float(w_norm), float(g_norm)
        if w == 0.0 or g == 0.0 or lr == 0:
            return 1.0
        return min(eta * w / (g + wd * w + eps) / lr, 1.0)
    like = w_norm if isinstance(w_norm, Tensor) else g_norm
    w = torch.as_tensor(w_norm, dtype=like.dtype, device=like.device)
    g = torch.as_tensor(g_norm, dtype=like.dtype, device=like.device)
    raw = eta * w / (g + wd * w + eps)
    # lr = 0: 1 everywhere, except that a NaN stays NaN (clamp propagates it).
    ratio = (raw / lr).clamp(max=1.0) if lr != 0 else raw.clamp(min=1.0, max=1.0)
    return torch.where((w == 0) | (g == 0), torch.ones_like(ratio), ratio)


def coef_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of norms and per-tensor factors for parameters of ``dtype`` (at least float32)."""
    return torch.promote_types(dtype, torch.float32)


def to_device(tensor: Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """``tensor.to(device, dtype)``, asynchronous unless the copy lands on the CPU (where
    the host would read it before a device-to-host copy has finished)."""
    return tensor.to(device=device, dtype=dtype, non_blocking=device.type != "cpu")


def stacked_norms(tensors: list[Tensor]) -> Tensor:
    """L2 norms of ``tensors`` as one 1-D vector (accumulated in at least float32)."""
    dtype = coef_dtype(tensors[0].dtype)
    if dtype == tensors[0].dtype:
        return torch.stack(torch._foreach_norm(tensors, 2))
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def _add_scaled_(targets: list[Tensor], factor: Factor, sources: list[Tensor]) -> None:
    """``targets[i] += factor_i * sources[i]``."""
    if isinstance(factor, Tensor):
        factor = [factor] * len(targets)
    if isinstance(factor, list):
        torch._foreach_addcmul_(targets, factor, sources)
    else:
        torch._foreach_add_(targets, sources, alpha=factor)


def multi_tensor_lars_(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    weight_norms: Tensor,
    grad_norms: Tensor,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    eps: float,
    nesterov: bool,
    momentum_form: str,
    larc: bool = False,
    trust_ratio_max: float | None = None,
    last_lrs: list[Tensor] | None = None,
    inv_grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """One LARS step, in place, for tensors sharing a device and a dtype.

    The first ``k = len(weight_norms)`` tensors are LARS parameters, the rest are
    excluded (trust ratio 1, no weight decay). With ``d = g + wd * w`` and ``t`` the trust
    ratio, replaced by :func:`larc_ratio` (``min(t / lr, 1)``) when ``larc`` and capped at
    ``min(t, trust_ratio_max)`` when that is given:

    * ``momentum_form="mxnet"``: ``buf = m' * buf + lr * t * d``; ``w -= buf``
      (Nesterov: ``w -= lr * t * d + m * buf``);
    * ``momentum_form="pytorch"``: ``buf = m * buf + t * d``; ``w -= lr * buf``
      (Nesterov: ``w -= lr * (t * d + m * buf)``);

    where ``m' = m * lr / last_lr`` when ``last_lrs`` is given (momentum correction,
    ``last_lrs`` then holds each buffer's last applied lr and is updated; ``m' = m``
    where ``last_lr`` is 0, the buffer then being 0), else ``m' = m``.

    Args:
        params, grads, momentum_buffers: parameters (LARS first), their gradients
            (possibly scaled by ``1 / inv_grad_scale``) and buffers (``None`` iff
            ``momentum == 0``). Gradients are left untouched, except on a skipped
            step (``found_inf != 0``), where they are zeroed in place.
        weight_norms, grad_norms: ``||w||`` and the *unscaled* ``||g||`` of the
            first ``k`` tensors, 1-D, on the tensors' device.
        inv_grad_scale: 0-D tensor multiplying the gradients (AMP unscaling).
        found_inf: 0-D tensor; where nonzero, parameters, buffers and ``last_lrs``
            are left exactly as they were (tensor masking, no host sync).
    """
    n_all, n_lars = len(params), weight_norms.numel()
    if n_all == 0:
        return
    device, cdtype = params[0].device, coef_dtype(params[0].dtype)
    mxnet = momentum_form == MXNET
    base = lr if mxnet else 1.0          # lr inside the buffer (MXNet) or outside (PyTorch)
    step_size = 1.0 if mxnet else lr

    keep: Tensor | None = None
    if found_inf is not None:
        keep = to_device(found_inf, device) == 0
        # inf * 0 is NaN, so a skipped step cannot be cancelled by a zero factor alone:
        # clear the (non-finite, unusable) gradients, then zero the factors below.
        skip = ~keep
        for g in grads:
            g.masked_fill_(skip, 0.0)

    # Per-tensor factors on the gradient (a) and on the weight for weight decay (b):
    # u = a * g + b * w is the term added to the buffer.
    a: Factor = base
    b: Tensor | None = None
    if n_lars:
        norms = weight_norms.to(cdtype), grad_norms.to(cdtype)
        if larc:
            trust = larc_ratio(*norms, weight_decay, eta, eps, lr)
        else:
            trust = trust_ratio(*norms, weight_decay, eta, eps)
            if trust_ratio_max is not None:
                trust = trust.clamp(max=trust_ratio_max)
        a_vec = torch.full((n_all,), base, dtype=cdtype, device=device)
        a_vec[:n_lars] *= trust
        if weight_decay != 0.0:
            b = a_vec[:n_lars] * weight_decay
        a = a_vec
    if inv_grad_scale is not None:
        a = to_device(inv_grad_scale, device, cdtype) * a
    if keep is not None:
        a = torch.where(keep, a, 0.0) if isinstance(a, Tensor) else keep.to(cdtype) * a
        b = None if b is None else torch.where(keep, b, 0.0)

    # Momentum factor m' (1 on a skipped step); the final step of the buffer is masked.
    mom: Factor | None = None
    if momentum != 0.0:
        if last_lrs is not None:
            previous = torch.stack(last_lrs)
            # A buffer last updated with lr 0 is 0: any finite factor works, take m.
            mom_vec = torch.where(previous > 0, (momentum * lr) / previous, momentum)
            if keep is None:
                new_last = torch.full_like(previous, lr)
            else:
                mom_vec = torch.where(keep, mom_vec, 1.0)
                new_last = torch.where(keep, lr, previous)
            torch._foreach_copy_(last_lrs, list(new_last.unbind()))
            mom = list(mom_vec.unbind())
        elif keep is None:
            mom = momentum
        else:
            mom = torch.where(keep, torch.full((), momentum, dtype=cdtype, device=device), 1.0)
    buf_step: Factor = -step_size * (momentum if nesterov else 1.0)
    if keep is not None:
        buf_step = keep.to(cdtype) * buf_step

    # Everything is accumulated in place: no temporary the size of the model.
    lars_params = params[:n_lars]
    if mom is not None:
        assert momentum_buffers is not None
        torch._foreach_mul_(momentum_buffers, mom)
        _add_scaled_(momentum_buffers, _per_tensor(a), grads)
        if b is not None:
            _add_scaled_(momentum_buffers[:n_lars], _per_tensor(b), lars_params)
        if not nesterov:                  # w -= s * buf
            _add_scaled_(params, buf_step, momentum_buffers)
            return
    # w -= s * u (+ s * m * buf for Nesterov), with u = a * g + b * w from the old w.
    if b is not None:
        _add_scaled_(lars_params, _per_tensor(-step_size * b), lars_params)
    _add_scaled_(params, _per_tensor(-step_size * a), grads)
    if mom is not None:
        _add_scaled_(params, buf_step, momentum_buffers)


def _per_tensor(factor: Factor) -> Factor:
    """A 1-D tensor of per-tensor factors as a list of 0-D tensors; anything else unchanged."""
    if isinstance(factor, Tensor) and factor.ndim == 1:
        return list(factor.unbind())
    return factor
