"""LARC clipping (``larc=True``) and the trust-ratio cap (``trust_ratio_max``) against their
formulas, written out here without the package: float64, many steps, a learning rate that rises
(warm-up) and decays, with and without weight decay, both momentum forms, with and without Nesterov.

LARC is NVIDIA apex's ``LARC(clip=True)`` around ``torch.optim.SGD`` (also timm's
``Lars(trust_clip=True)``), which is the PyTorch form::

    t = eta * ||w|| / (||g|| + wd * ||w|| + eps)
    s = min(t / lr, 1)                   # apex: adaptive_lr = min(adaptive_lr / lr, 1)
    u = s * (g + wd * w)                 # the gradient, weight decay added, scaled
    buf = m * buf + u ;  w -= lr * buf   # torch.optim.SGD (Nesterov: w -= lr * (u + m * buf))

so the local lr is lr * s = min(t, lr). The MXNet form puts that local lr inside the buffer:
``buf = m * buf + lr * s * (g + wd * w) ; w -= buf``. The cap instead uses ``s = min(t, c)``.
"""

from __future__ import annotations

import math

import pytest
import torch

from lars import LARS

STEPS = 50
ETA, EPS, MOMENTUM = 0.02, 1e-9, 0.9
CAP = 0.05  # between the smallest and the largest trust ratio of the small CNN here


def _clip_factor(mode: str, t: float, lr: float) -> float:
    """The factor on the global lr: the local lr is lr * factor."""
    if mode == "larc":
        return min(t / lr, 1.0)
    return min(t, CAP)


def _formula_run(weights, grads_per_step, lrs, *, mode, form, nesterov, wd):
    """Expected weights after the steps, and how often the clip bound (and did not) for LARS tensors."""
    w = [x.clone() for x in weights]
    bufs = [torch.zeros_like(x) for x in w]
    bound = free = 0
    for grads, lr in zip(grads_per_step, lrs):
        for i, g in enumerate(grads):
            if w[i].ndim <= 1:  # excluded: plain SGD with momentum, no weight decay
                s, d = 1.0, g
            else:
                w_norm, g_norm = math.sqrt(float((w[i] ** 2).sum())), math.sqrt(float((g ** 2).sum()))
                t = ETA * w_norm / (g_norm + wd * w_norm + EPS)
                s = _clip_factor(mode, t, lr)
                unclipped = t / lr if mode == "larc" else t
                bound, free = bound + (s < unclipped), free + (s == unclipped)
                d = g + wd * w[i]
            u = s * d if form == "pytorch" else lr * s * d
            bufs[i] = MOMENTUM * bufs[i] + u
            step = u + MOMENTUM * bufs[i] if nesterov else bufs[i]
            w[i] = w[i] - (lr * step if form == "pytorch" else step)
    return w, bound, free


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("wd", [0.0, 1e-2], ids=["wd0", "wd"])
@pytest.mark.parametrize("form", ["pytorch", "mxnet"])
@pytest.mark.parametrize("mode", ["larc", "trust_ratio_max"])
def test_clipping_follows_its_formula(mode, form, wd, nesterov, make_cnn, lr_at):
    model = make_cnn(torch.float64)
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(11)
    grads_per_step = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.05 for p in params]
                      for _ in range(STEPS)]
    lrs = [lr_at(t) for t in range(STEPS)]  # 0.02 rising to 0.14 by step 9, then down to ~1e-3

    clip = {"larc": True} if mode == "larc" else {"trust_ratio_max": CAP}
    opt = LARS(params, lr=lrs[0], momentum=MOMENTUM, weight_decay=wd, eta=ETA, eps=EPS,
               nesterov=nesterov, momentum_form=form, **clip)
    for grads, lr in zip(grads_per_step, lrs):
        opt.param_groups[0]["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()

    expected, bound, free = _formula_run(start, grads_per_step, lrs, mode=mode, form=form,
                                         nesterov=nesterov, wd=wd)
    assert bound > 20 and free > 20, "the clip should bind on some steps and tensors, not on others"
    for p, e, s in zip(params, expected, start):
        assert (p - s).abs().max() > 1e-3  # every tensor moved
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12)
