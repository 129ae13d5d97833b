"""Mixed precision and guarded steps on the GPU (crossover_sgd/training/precision.py).

fp16 autocast with a GradScaler takes steps and skips an injected non-finite one (parameters,
momentum and LARS state untouched, the scale halved, ``skipped`` counted on the device); bf16
autocast gives the fp32 loss within bf16's precision; without a scaler the guarded step skips
non-finite gradients (SGD after one host read, LARS masked on the device with no host sync);
the precision state survives a checkpoint round trip onto the GPU.
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

import lars
from crossover_sgd.training.precision import Precision, check_amp
from gpu_support import (GPU_MARKS, assert_unchanged, batch, bn_cnn, changed, cuda0, no_host_sync,
                         snapshot)

pytestmark = GPU_MARKS


def make_optimizer(kind: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if kind == "lars":
        return lars.LARS(lars.param_groups(model), lr=0.1, momentum=0.9, weight_decay=1e-4, eta=0.02,
                         momentum_correction=True)
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def forward_backward(precision: Precision, model, x, y, expect_dtype=None) -> torch.Tensor:
    with precision.autocast():
        logits = model(x)
        if expect_dtype is not None:
            assert logits.dtype == expect_dtype
        loss = F.cross_entropy(logits, y)
    precision.backward(loss)
    return loss


def guarded_step(precision: Precision, model, optimizer) -> None:
    """What Trainer.train_step does after backward: unscale, then the guarded step."""
    precision.unscale_(optimizer)
    precision.step(optimizer, model.parameters())


@pytest.mark.parametrize("kind", ["sgd", "lars"])
def test_fp16_gradscaler_takes_steps_and_skips_an_injected_inf_step(kind):
    device = cuda0()
    check_amp("fp16", device)  # accepted on a GPU (refused on the CPU: tests/training)
    model = bn_cnn().to(device)
    optimizer = make_optimizer(kind, model)
    precision = Precision("fp16", device)
    assert precision.scaler is not None and precision.scaler.is_enabled()
    x, y = (t.to(device) for t in batch())

    # Clean steps: a step is taken unless the scaler backs off (an fp16 overflow at the initial
    # scale of 2**16 is allowed), and every back-off is counted as a skipped step.
    taken = 0
    for _ in range(12):
        optimizer.zero_grad(set_to_none=True)
        before, scale = snapshot(model), precision.scaler.get_scale()
        forward_backward(precision, model, x, y, expect_dtype=torch.float16)
        guarded_step(precision, model, optimizer)
        backed_off = precision.scaler.get_scale() < scale
        assert changed(before, model) != backed_off
        taken += not backed_off
    assert taken >= 6, f"only {taken} of 12 clean fp16 steps were taken"
    assert precision.skipped.device.type == "cuda"
    skipped_so_far = int(precision.skipped)
    assert skipped_so_far == 12 - taken

    # An injected inf in the input: the loss and every gradient are non-finite.
    optimizer.zero_grad(set_to_none=True)
    before, scale = snapshot(model, optimizer), precision.scaler.get_scale()
    bad = x.clone()
    bad[0] = float("inf")
    loss = forward_backward(precision, model, bad, y)
    assert not torch.isfinite(loss)
    guarded_step(precision, model, optimizer)
    assert_unchanged(before, model, optimizer)
    assert int(precision.skipped) == skipped_so_far + 1
    assert precision.scaler.get_scale() == scale / 2

    # and training goes on
    optimizer.zero_grad(set_to_none=True)
    before = snapshot(model)
    forward_backward(precision, model, x, y)
    guarded_step(precision, model, optimizer)
    assert changed(before, model)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_bf16_autocast_loss_matches_fp32_within_bf16_tolerance():
    device = cuda0()
    model = bn_cnn().to(device).eval()  # eval: the two passes see the same BatchNorm statistics
    x, y = (t.to(device) for t in batch(n=64))
    off, bf16 = Precision("off", device), Precision("bf16", device)
    assert bf16.scaler is None  # bf16 needs no loss scaling

    losses, grads = {}, {}
    for name, precision in (("fp32", off), ("bf16", bf16)):
        model.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(x)
            assert logits.dtype == (torch.bfloat16 if name == "bf16" else torch.float32)
            loss = F.cross_entropy(logits, y)
        precision.backward(loss)
        losses[name] = loss.item()
        grads[name] = torch.cat([p.grad.float().reshape(-1) for p in model.parameters()])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2), losses
    cosine = F.cosine_similarity(grads["fp32"], grads["bf16"], dim=0).item()
    assert cosine > 0.99, f"bf16 gradients point elsewhere than fp32's (cosine {cosine:.4f})"


@pytest.mark.parametrize("kind", ["sgd", "lars"])
@pytest.mark.parametrize("mode", ["off", "bf16"])
def test_guarded_step_without_scaler_skips_nonfinite_gradients(mode, kind):
    device = cuda0()
    model = bn_cnn().to(device)
    optimizer = make_optimizer(kind, model)
    precision = Precision(mode, device, skip_nonfinite=True)
    x, y = (t.to(device) for t in batch())
    forward_backward(precision, model, x, y)
    guarded_step(precision, model, optimizer)  # a first step: momentum buffers exist
    assert int(precision.skipped) == 0

    optimizer.zero_grad(set_to_none=True)
    forward_backward(precision, model, x, y)
    model[3].weight.grad[0, 0, 0, 0] = float("nan")
    model[6].bias.grad[1] = float("inf")
    before = snapshot(model, optimizer)
    guarded_step(precision, model, optimizer)
    assert_unchanged(before, model, optimizer)
    assert int(precision.skipped) == 1 and precision.skipped.device.type == "cuda"

    optimizer.zero_grad(set_to_none=True)
    before = snapshot(model)
    forward_backward(precision, model, x, y)
    guarded_step(precision, model, optimizer)
    assert changed(before, model) and int(precision.skipped) == 1


def test_guarded_lars_step_reads_nothing_on_the_host():
    """The documented promise: with LARS (the found_inf protocol) a guarded step, clean or skipped,
    checks and masks on the device without a host synchronisation."""
    device = cuda0()
    model = bn_cnn().to(device)
    optimizer = make_optimizer("lars", model)
    precision = Precision("bf16", device)
    x, y = (t.to(device) for t in batch())
    forward_backward(precision, model, x, y)
    guarded_step(precision, model, optimizer)  # state allocated outside the checked region
    torch.cuda.synchronize()
    for poison in (False, True):
        optimizer.zero_grad(set_to_none=True)
        forward_backward(precision, model, x, y)
        if poison:
            model[0].weight.grad.view(-1)[0] = float("inf")  # an in-place device write: no sync
        with no_host_sync():
            guarded_step(precision, model, optimizer)
    assert int(precision.skipped) == 1


def test_skip_nonfinite_false_lets_a_nonfinite_step_through():
    device = cuda0()
    model = bn_cnn().to(device)
    optimizer = make_optimizer("sgd", model)
    precision = Precision("off", device, skip_nonfinite=False)
    x, y = (t.to(device) for t in batch())
    forward_backward(precision, model, x, y)
    model[6].weight.grad[0, 0] = float("inf")
    guarded_step(precision, model, optimizer)
    assert not bool(torch.isfinite(model[6].weight).all())
    assert int(precision.skipped) == 0


def test_fp16_precision_state_round_trips_through_a_checkpoint_onto_the_gpu():
    device = cuda0()
    model = bn_cnn().to(device)
    optimizer = make_optimizer("sgd", model)
    precision = Precision("fp16", device)
    x, y = (t.to(device) for t in batch())
    bad = x.clone()
    bad[0] = float("nan")
    for inputs in (x, bad, x):
        optimizer.zero_grad(set_to_none=True)
        forward_backward(precision, model, inputs, y)
        guarded_step(precision, model, optimizer)
    state = precision.state_dict()
    assert state["skipped"].device.type == "cpu"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, map_location=device, weights_only=True)  # as load_checkpoint does
    restored = Precision("fp16", device)
    restored.load_state_dict(loaded)
    assert restored.scaler.get_scale() == precision.scaler.get_scale()
    assert restored.skipped.device.type == "cuda" and int(restored.skipped) == int(precision.skipped) >= 1
