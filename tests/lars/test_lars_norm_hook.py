"""The norm hook: called once per step with all LARS norms stacked; its output drives the update."""

from __future__ import annotations

import pytest
import torch

from lars import LARS, param_groups


class Recorder:
    """A norm hook that records its inputs and rescales the squared norms."""

    def __init__(self, weight_factor: float = 1.0, grad_factor: float = 1.0) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.weight_factor, self.grad_factor = weight_factor, grad_factor

    def __call__(self, w_sq: torch.Tensor, g_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append((w_sq.clone(), g_sq.clone()))
        return w_sq * self.weight_factor, g_sq * self.grad_factor


def _with_grads(make_cnn, dtype: torch.dtype = torch.float32):
    model = make_cnn(dtype)
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
    return model


def test_called_once_per_step_with_all_lars_norms(make_cnn):
    model = _with_grads(make_cnn)
    groups = param_groups(model)
    groups[0]["params"], extra = groups[0]["params"][:2], groups[0]["params"][2:]
    groups.append({"params": extra, "exclude": False, "lr": 0.01})  # LARS norms span two groups
    opt = LARS(groups, lr=0.1)
    hook = Recorder()
    opt.set_norm_hook(hook)
    scale = torch.tensor(8.0)
    for p in model.parameters():
        p.grad *= scale
    expected_params = [model[0].weight, model[3].weight, model[6].weight]
    assert opt.lars_parameters() == expected_params

    opt.step(grad_scale=scale)
    opt.step(grad_scale=scale)
    assert len(hook.calls) == 2
    w_sq, g_sq = hook.calls[0]
    assert w_sq.shape == g_sq.shape == (3,)
    assert w_sq.dtype == torch.float32
    grads_unscaled = [p.grad / scale for p in expected_params]
    before_first_step = make_cnn()  # same seed: the initial weights
    initial = [before_first_step[0].weight, before_first_step[3].weight, before_first_step[6].weight]
    torch.testing.assert_close(w_sq, torch.stack([p.detach().norm() ** 2 for p in initial]))
    torch.testing.assert_close(g_sq, torch.stack([g.norm() ** 2 for g in grads_unscaled]))


def test_identity_hook_changes_nothing(make_cnn, param_diff):
    a, b = _with_grads(make_cnn), _with_grads(make_cnn)
    opt_a = LARS(a.parameters(), lr=0.1, weight_decay=1e-2, eta=0.02)
    opt_b = LARS(b.parameters(), lr=0.1, weight_decay=1e-2, eta=0.02)
    opt_b.set_norm_hook(Recorder())
    opt_a.step()
    opt_b.step()
    assert param_diff(a, b) < 1e-7


@pytest.mark.parametrize("factor", [4.0, 0.25])
def test_scaled_weight_norms_scale_the_lars_step(factor, make_cnn):
    """wd = eps = 0, no momentum: t = eta ||w|| / ||g||, so ||w||^2 * c^2 multiplies the LARS step by c.

    In float64 so that the steps, recovered as differences of parameters, are exact enough.
    """
    start = make_cnn(torch.float64)
    plain, hooked = _with_grads(make_cnn, torch.float64), _with_grads(make_cnn, torch.float64)
    options = dict(lr=0.1, momentum=0.0, weight_decay=0.0, eps=0.0, eta=0.02)
    opt_plain, opt_hooked = LARS(plain.parameters(), **options), LARS(hooked.parameters(), **options)
    opt_hooked.set_norm_hook(Recorder(weight_factor=factor))
    opt_plain.step()
    opt_hooked.step()
    c = factor ** 0.5
    for p0, pp, ph in zip(start.parameters(), plain.parameters(), hooked.parameters()):
        step_plain, step_hooked = (pp - p0).detach(), (ph - p0).detach()
        if p0.ndim > 1:
            torch.testing.assert_close(step_hooked, c * step_plain, rtol=1e-9, atol=1e-12)
        else:  # excluded parameters ignore the hook
            assert torch.equal(step_hooked, step_plain)


def test_grad_norm_hook_changes_trust(make_cnn):
    start = make_cnn(torch.float64)
    model = _with_grads(make_cnn, torch.float64)
    opt = LARS(model.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0, eps=0.0, eta=0.02)
    opt.set_norm_hook(Recorder(grad_factor=9.0))  # ||g|| tripled -> step divided by 3
    opt.step()
    p0, p = start[0].weight, model[0].weight
    expected = -0.1 * 0.02 * p0.norm() / (3 * p.grad.norm()) * p.grad
    torch.testing.assert_close((p - p0).detach(), expected.detach(), rtol=1e-9, atol=1e-12)


def test_hook_removed_with_none_and_shape_checked(make_cnn):
    model = _with_grads(make_cnn)
    opt = LARS(model.parameters(), lr=0.1)
    hook = Recorder()
    opt.set_norm_hook(hook)
    opt.set_norm_hook(None)
    opt.step()
    assert hook.calls == []
    opt.set_norm_hook(lambda w, g: (w[:1], g))
    with pytest.raises(ValueError, match="shape"):
        opt.step()
