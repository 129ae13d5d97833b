"""The multi-tensor LARS against the per-parameter reference, and the two momentum forms."""

from __future__ import annotations

import pytest
import torch

from lars import LARS, param_groups, trust_ratio
from lars.reference import ReferenceLARS

STEPS = 50
ETA, WD = 0.02, 1e-2


def _set_lr(optimizers, lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def _train_pair(a, b, opt_a, opt_b, set_random_grads, lr_at, steps: int = STEPS,
                grad_scale: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(1)
    for t in range(steps):
        _set_lr((opt_a, opt_b), lr_at(t))
        set_random_grads([a, b], gen, grad_scale)
        opt_a.step()
        opt_b.step()


def _median_initial_trust(model) -> float:
    """A clip value that binds for about half of the model's LARS tensors at step 0."""
    ratios = [trust_ratio(p.norm().item(), 0.05 * p.numel() ** 0.5, WD, ETA, 1e-9)
              for p in model.parameters() if p.ndim > 1]
    return sorted(ratios)[len(ratios) // 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("clip", ["noclip", "larc", "ratio_max"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("form", ["mxnet", "pytorch"])
def test_matches_reference(form, nesterov, clip, dtype, make_cnn, set_random_grads, lr_at,
                           param_diff):
    a, b = make_cnn(dtype), make_cnn(dtype)
    clipping = {"noclip": {}, "larc": {"larc": True},
                "ratio_max": {"trust_ratio_max": _median_initial_trust(a)}}[clip]
    options = dict(momentum=0.9, weight_decay=WD, eta=ETA, nesterov=nesterov, momentum_form=form,
                   **clipping)
    fast = LARS(a.parameters(), lr=lr_at(0), **options)
    ref = ReferenceLARS(b.parameters(), lr=lr_at(0), **options)
    start = [p.detach().clone() for p in a.parameters()]

    _train_pair(a, b, fast, ref, set_random_grads, lr_at)

    moved = min((p - s).abs().max().item() for p, s in zip(a.parameters(), start))
    assert moved > 1e-4, "every parameter should have been updated"
    assert param_diff(a, b) < 1e-6
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(fast.state[pa]["momentum_buffer"],
                                   ref.state[pb]["momentum_buffer"], rtol=0, atol=1e-6)
        assert fast.state[pa]["step"].item() == ref.state[pb]["step"] == STEPS


def test_matches_reference_with_param_groups_and_correction(make_cnn, set_random_grads, lr_at,
                                                            param_diff):
    """Two groups from param_groups() with different options, MXNet form with correction."""
    a, b = make_cnn(), make_cnn()

    def groups(model):
        lars_group, excluded = param_groups(model)
        return [lars_group, {**excluded, "momentum": 0.8}]

    options = dict(momentum=0.9, weight_decay=WD, eta=ETA, momentum_correction=True)
    fast = LARS(groups(a), lr=0.1, **options)
    ref = ReferenceLARS(groups(b), lr=0.1, **options)
    _train_pair(a, b, fast, ref, set_random_grads, lr_at)
    assert param_diff(a, b) < 1e-6


def test_mixed_dtypes_in_one_group(set_random_grads, lr_at, param_diff):
    """Parameters of two dtypes in one group are bucketed separately and still match."""
    def model():
        torch.manual_seed(3)
        m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 4))
        m[1].double()
        return m

    a, b = model(), model()
    options = dict(momentum=0.9, weight_decay=WD, eta=ETA, nesterov=True)
    fast, ref = LARS(a.parameters(), lr=0.1, **options), ReferenceLARS(b.parameters(), lr=0.1, **options)
    _train_pair(a, b, fast, ref, set_random_grads, lr_at, steps=10)
    assert param_diff(a, b) < 1e-6


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_mxnet_with_correction_equals_pytorch_form(nesterov, make_cnn, set_random_grads, lr_at,
                                                   param_diff):
    models = [make_cnn() for _ in range(3)]
    common = dict(momentum=0.9, weight_decay=WD, eta=ETA, nesterov=nesterov)
    corrected = LARS(models[0].parameters(), lr=lr_at(0), momentum_form="mxnet",
                     momentum_correction=True, **common)
    pytorch = LARS(models[1].parameters(), lr=lr_at(0), momentum_form="pytorch", **common)
    uncorrected = LARS(models[2].parameters(), lr=lr_at(0), momentum_form="mxnet", **common)
    gen = torch.Generator().manual_seed(2)
    for t in range(STEPS):
        _set_lr((corrected, pytorch, uncorrected), lr_at(t))
        set_random_grads(models, gen, 0.05)
        for opt in (corrected, pytorch, uncorrected):
            opt.step()
    assert param_diff(models[0], models[1]) < 1e-6
    # Without the correction the forms really differ under this schedule.
    assert param_diff(models[2], models[1]) > 1e-3


def test_correction_survives_a_zero_learning_rate(make_cnn, set_random_grads, param_diff):
    """Warm-up from lr = 0: the buffer is 0 after that step, and no 0/0 appears later."""
    a, b = make_cnn(), make_cnn()
    options = dict(momentum=0.9, weight_decay=WD, eta=ETA, momentum_correction=True)
    fast, ref = LARS(a.parameters(), lr=0.0, **options), ReferenceLARS(b.parameters(), lr=0.0, **options)
    _train_pair(a, b, fast, ref, set_random_grads, lambda t: 0.02 * t, steps=10)
    assert all(torch.isfinite(p).all() for p in a.parameters())
    assert param_diff(a, b) < 1e-6
