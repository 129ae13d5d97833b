"""trust_ratio(), larc_ratio(), the zero-norm fallback and the treatment of excluded parameters."""

from __future__ import annotations

import math

import pytest
import torch

from lars import LARS, larc_ratio, trust_ratio


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


def test_larc_ratio_is_min_of_trust_over_lr_and_one():
    t = trust_ratio(1.234, 5.678, 1e-4, 0.001, 1e-8)
    assert larc_ratio(1.234, 5.678, 1e-4, 0.001, 1e-8, lr=0.1) == pytest.approx(t / 0.1, rel=1e-15)
    assert larc_ratio(1.234, 5.678, 1e-4, 0.001, 1e-8, lr=1e-4) == 1.0  # t > lr: local lr = lr
    # Zero norms: no adaptation (local lr = lr, as apex), whatever lr; lr = 0: 1 (nothing moves).
    assert larc_ratio(0.0, 5.0, 0.0, 0.001, 0.0, lr=3.0) == 1.0
    assert larc_ratio(2.0, 0.0, 0.0, 0.001, 0.0, lr=3.0) == 1.0
    assert larc_ratio(1.0, 1.0, 0.0, 0.5, 0.0, lr=0.0) == 1.0
    on_tensors = larc_ratio(torch.tensor([2.0, 0.0, 2.0, 1.0]),
                            torch.tensor([4.0, 1.0, 0.5, math.nan]), 0.0, 0.5, 0.0, lr=0.5)
    torch.testing.assert_close(on_tensors, torch.tensor([0.5, 1.0, 1.0, math.nan]), equal_nan=True)
    at_lr_zero = larc_ratio(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([4.0, 1.0, math.nan]),
                            0.0, 0.5, 0.0, lr=0.0)
    torch.testing.assert_close(at_lr_zero, torch.tensor([1.0, 1.0, math.nan]), equal_nan=True)


def _single_step(weight: torch.Tensor, grad: torch.Tensor, **options) -> torch.Tensor:
    p = torch.nn.Parameter(weight.clone())
    p.grad = grad.clone()
    LARS([p], **options).step()
    return p.detach()


@pytest.mark.parametrize("larc", [False, True], ids=["plain", "larc"])
def test_optimizer_zero_weight_uses_trust_one(larc):
    """The local lr is lr, also under LARC (apex; timm's min(1, lr) would step by 1 * g here)."""
    grad = torch.randn(4, 3)
    new = _single_step(torch.zeros(4, 3), grad, lr=2.0, momentum=0.0, weight_decay=0.1, eta=1e-3,
                       larc=larc)
    torch.testing.assert_close(new, -2.0 * grad)


@pytest.mark.parametrize("larc", [False, True], ids=["plain", "larc"])
def test_optimizer_zero_grad_uses_trust_one(larc):
    """Weight decay is still applied (apex LARC would skip it for this tensor)."""
    weight = torch.randn(4, 3)
    new = _single_step(weight, torch.zeros(4, 3), lr=2.0, momentum=0.0, weight_decay=0.1, eta=1e-3,
                       larc=larc)
    torch.testing.assert_close(new, weight - 2.0 * 0.1 * weight)


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


@pytest.mark.parametrize("trust", [0.05, 50.0], ids=["below-lr", "above-lr"])
def test_larc_and_ratio_cap_one_step(trust):
    """LARC's local lr is min(t, lr); trust_ratio_max=1 gives lr * min(t, 1): they differ below lr."""
    weight, grad = torch.full((2, 2), 1.0), torch.full((2, 2), 0.1)  # ||w|| = 2, ||g|| = 0.2
    eta = trust * 0.2 / 2.0  # wd = eps = 0: t = eta * ||w|| / ||g|| = trust
    assert trust_ratio(2.0, 0.2, 0.0, eta, 0.0) == pytest.approx(trust, rel=1e-12)
    options = dict(lr=0.1, momentum=0.0, eta=eta, eps=0.0)
    torch.testing.assert_close(_single_step(weight, grad, larc=True, **options),
                               weight - min(trust, 0.1) * grad)
    torch.testing.assert_close(_single_step(weight, grad, trust_ratio_max=1.0, **options),
                               weight - 0.1 * min(trust, 1.0) * grad)
