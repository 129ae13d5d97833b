"""LARS under torch.amp.GradScaler: unscaled trust ratios and exact skipping of bad steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lars import LARS

OPTIONS = dict(momentum=0.9, weight_decay=1e-2, eta=0.02, momentum_correction=True)
SCALE = 2.0 ** 10


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    return [(torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen))
            for _ in range(n)]


def _make_optimizer(model, lr: float, native_amp: bool) -> LARS:
    opt = LARS(model.parameters(), lr=lr, **OPTIONS)
    if not native_amp:  # make GradScaler unscale and skip by itself
        opt._step_supports_amp_scaling = False
    return opt


def _snapshot(model, opt):
    params = [p.detach().clone() for p in model.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()]
    return params, state


def _assert_same(snapshot, model, opt):
    params, state = snapshot
    for p, old in zip(model.parameters(), params):
        assert torch.equal(p, old)
    for p, old in zip(model.parameters(), state):
        assert opt.state[p].keys() == old.keys()
        for key, value in old.items():
            assert torch.equal(opt.state[p][key], value), key


@pytest.mark.parametrize("protocol", ["found_inf", "unscale_first", "scaler_skips"])
def test_scaled_training_equals_unscaled(protocol, make_cnn, lr_at, param_diff):
    plain, scaled = make_cnn(), make_cnn()
    opt_plain = LARS(plain.parameters(), lr=lr_at(0), **OPTIONS)
    opt_scaled = _make_optimizer(scaled, lr_at(0), native_amp=protocol != "scaler_skips")
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    for t, (x, y) in enumerate(_batches(8)):
        for opt in (opt_plain, opt_scaled):
            opt.param_groups[0]["lr"] = lr_at(t)
            opt.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt_plain.step()
        scaler.scale(F.cross_entropy(scaled(x), y)).backward()
        if protocol == "unscale_first":
            scaler.unscale_(opt_scaled)
        scaler.step(opt_scaled)
        scaler.update()
    assert scaler.get_scale() == SCALE
    assert param_diff(plain, scaled) < 1e-6
    for p in plain.parameters():
        assert opt_plain.state[p]["step"].item() == 8


@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("protocol", ["found_inf", "unscale_first", "scaler_skips"])
def test_non_finite_step_changes_nothing(protocol, bad, make_cnn, lr_at):
    model = make_cnn()
    opt = _make_optimizer(model, lr_at(0), native_amp=protocol != "scaler_skips")
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    (x, y), (x2, y2) = _batches(2)
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    before = _snapshot(model, opt)

    opt.zero_grad()
    opt.param_groups[0]["lr"] = lr_at(1)
    scaler.scale(F.cross_entropy(model(x2), y2)).backward()
    model[3].weight.grad[0, 0, 0, 0] = bad
    if protocol == "unscale_first":
        scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    _assert_same(before, model, opt)
    assert scaler.get_scale() == SCALE / 2  # the scaler did see the bad gradient


def test_direct_found_inf_keywords(make_cnn):
    """step(grad_scale=..., found_inf=...) without GradScaler: unscales, or skips."""
    ref, model = make_cnn(), make_cnn()
    opt_ref = LARS(ref.parameters(), lr=0.1, **OPTIONS)
    opt = LARS(model.parameters(), lr=0.1, **OPTIONS)
    gen = torch.Generator().manual_seed(0)
    for p_ref, p in zip(ref.parameters(), model.parameters()):
        p_ref.grad = torch.randn(p.shape, generator=gen)
        p.grad = p_ref.grad * SCALE
    opt_ref.step()
    opt.step(grad_scale=torch.tensor(SCALE), found_inf=torch.tensor(0.0))
    for p_ref, p in zip(ref.parameters(), model.parameters()):
        torch.testing.assert_close(p, p_ref, rtol=0, atol=1e-7)
        assert torch.equal(p.grad, p_ref.grad * SCALE)  # gradients are not modified

    before = _snapshot(model, opt)
    model[0].weight.grad[0, 0, 0, 0] = float("inf")
    opt.param_groups[0]["lr"] = 0.05
    opt.step(grad_scale=torch.tensor(SCALE), found_inf=torch.tensor(1.0))
    _assert_same(before, model, opt)
    # The unusable gradients of a skipped step are cleared (documented).
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_skipped_step_is_invisible_to_later_steps(nesterov, make_cnn, set_random_grads, param_diff):
    """Steps lr0, (skipped at lr1), lr2 equal steps lr0, lr2: last_lr did not advance."""
    options = {**OPTIONS, "nesterov": nesterov}
    a, b = make_cnn(), make_cnn()
    opt_a = LARS(a.parameters(), lr=0.1, **options)
    opt_b = LARS(b.parameters(), lr=0.1, **options)
    gen = torch.Generator().manual_seed(3)
    set_random_grads([a, b], gen, 0.05)
    opt_a.step()
    opt_b.step()
    set_random_grads([a], gen, 0.05)
    opt_a.param_groups[0]["lr"] = 0.3
    opt_a.step(found_inf=torch.tensor(1.0))
    set_random_grads([a, b], gen, 0.05)
    for opt in (opt_a, opt_b):
        opt.param_groups[0]["lr"] = 0.05
        opt.step()
    assert param_diff(a, b) == 0.0
    for p in a.parameters():
        assert opt_a.state[p]["step"].item() == 2
