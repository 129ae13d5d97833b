"""trust_ratio(), the zero-norm fallback and the treatment of excluded parameters."""

from __future__ import annotations

import math

import pytest
import torch

from lars import LARS, trust_ratio


def test_known_value_from_public_suite():
    expected = 0.001 * 1.234 / (5.678 + 1e-4 * 1.234 + 1e-8)
    assert expected == pytest.approx(0.000217325, abs=1e-9)
    assert trust_ratio(1.234, 5.678, wd=1e-4, eta=0.001, eps=1e-8) == pytest.approx(expected, abs=1e-15)
    as_tensor = trust_ratio(torch.tensor(1.234, dtype=torch.float64),
                            torch.tensor(5.678, dtype=torch.float64), 1e-4, 0.001, 1e-8)
    assert isinstance(as_tensor, torch.Tensor)
    assert as_tensor.item() == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("w_norm, g_norm", [(0.0, 5.0), (1.5, 0.0), (0.0, 0.0)])
def test_zero_norm_falls_back_to_one(w_norm, g_norm):
    assert trust_ratio(w_norm, g_norm, 1e-4, 0.001, 1e-9) == 1.0
    ratio = trust_ratio(torch.tensor([w_norm, 2.0]), torch.tensor([g_norm, 4.0]), 0.0, 0.5, 0.0)
    torch.testing.assert_close(ratio, torch.tensor([1.0, 0.25]))


def test_mixed_float_and_tensor_and_nan():
    ratio = trust_ratio(torch.tensor([2.0, 0.0]), 4.0, 0.0, 0.5, 0.0)
    torch.testing.assert_close(ratio, torch.tensor([0.25, 1.0]))
    # A non-finite gradient norm is not hidden by the fallback.
    assert math.isnan(trust_ratio(torch.tensor(1.0), torch.tensor(float("nan")), 0.0, 1.0, 0.0).item())


def _single_step(weight: torch.Tensor, grad: torch.Tensor, **options) -> torch.Tensor:
    p = torch.nn.Parameter(weight.clone())
    p.grad = grad.clone()
    LARS([p], **options).step()
    return p.detach()


def test_optimizer_zero_weight_uses_trust_one():
    grad = torch.randn(4, 3)
    new = _single_step(torch.zeros(4, 3), grad, lr=0.1, momentum=0.0, weight_decay=0.1, eta=1e-3)
    torch.testing.assert_close(new, -0.1 * grad)


def test_optimizer_zero_grad_uses_trust_one():
    weight = torch.randn(4, 3)
    new = _single_step(weight, torch.zeros(4, 3), lr=0.1, momentum=0.0, weight_decay=0.1, eta=1e-3)
    torch.testing.assert_close(new, weight - 0.1 * 0.1 * weight)


@pytest.mark.parametrize("form", ["mxnet", "pytorch"])
def test_excluded_params_get_plain_momentum_sgd(form):
    """Biases and BatchNorm-like 1-D tensors: no trust ratio, no weight decay."""
    torch.manual_seed(0)
    bias = torch.nn.Parameter(torch.randn(5))
    opt = LARS([bias], lr=0.1, momentum=0.9, weight_decay=0.5, eta=1e-3, momentum_form=form)
    expected, buf = bias.detach().clone(), torch.zeros(5)
    for t, lr in enumerate([0.1, 0.1, 0.1, 0.1]):  # constant lr: both forms agree
        opt.param_groups[0]["lr"] = lr
        bias.grad = torch.randn(5)
        opt.step()
        if form == "mxnet":
            buf = 0.9 * buf + lr * bias.grad
            expected -= buf
        else:
            buf = 0.9 * buf + bias.grad
            expected -= lr * buf
        torch.testing.assert_close(bias.detach(), expected, rtol=0, atol=1e-6, msg=f"step {t}")


def test_exclude_option_overrides_ndim_rule():
    torch.manual_seed(0)
    vec, mat = torch.randn(6) + 2.0, torch.randn(3, 2)
    g_vec, g_mat = torch.randn(6), torch.randn(3, 2)
    options = dict(lr=0.5, momentum=0.0, weight_decay=0.1, eta=0.01)

    # exclude=False: the 1-D tensor gets LARS and weight decay.
    t = trust_ratio(vec.norm().item(), g_vec.norm().item(), 0.1, 0.01, 1e-9)
    new_vec = _single_step(vec, g_vec, exclude=False, **options)
    torch.testing.assert_close(new_vec, vec - 0.5 * t * (g_vec + 0.1 * vec))
    # exclude=True: the 2-D tensor gets plain SGD.
    new_mat = _single_step(mat, g_mat, exclude=True, **options)
    torch.testing.assert_close(new_mat, mat - 0.5 * g_mat)
    # Default: a 2-D tensor gets LARS.
    t = trust_ratio(mat.norm().item(), g_mat.norm().item(), 0.1, 0.01, 1e-9)
    torch.testing.assert_close(_single_step(mat, g_mat, **options), mat - 0.5 * t * (g_mat + 0.1 * mat))


def test_trust_clip_caps_local_lr_at_global_lr():
    weight, grad = torch.full((2, 2), 10.0), torch.full((2, 2), 1e-3)  # trust ratio >> 1
    assert trust_ratio(weight.norm().item(), grad.norm().item(), 0.0, 0.1, 1e-9) > 100
    new = _single_step(weight, grad, lr=0.1, momentum=0.0, eta=0.1, trust_clip=1.0)
    torch.testing.assert_close(new, weight - 0.1 * grad)
