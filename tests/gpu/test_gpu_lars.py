"""The LARS optimizer (lars/) on CUDA tensors.

LARS on the GPU equals LARS on the CPU in float64 step by step (every option), and the per-parameter
reference in float32; its step reads nothing on the host (``torch.cuda.set_sync_debug_mode``, the
check tests/lars/test_lars_no_sync.py can only approximate on the CPU); under a real fp16
GradScaler on the GPU it trains like unscaled LARS and a non-finite step changes nothing, in each of
GradScaler's three protocols; its state moves from a CPU checkpoint onto the GPU.
"""

from __future__ import annotations

import io
import itertools

import pytest
import torch
import torch.nn.functional as F

from lars import LARS
from lars.reference import ReferenceLARS
from gpu_support import GPU_MARKS, assert_unchanged, batch, bn_cnn, cuda0, no_host_sync, snapshot

pytestmark = GPU_MARKS

CONFIGS = [  # as tests/lars/test_lars_no_sync.py
    dict(momentum_form=form, nesterov=nesterov, momentum_correction=correction, **clip)
    for form, nesterov, correction, clip in itertools.product(
        ["mxnet", "pytorch"], [False, True], [False, True],
        [{}, {"larc": True}, {"trust_ratio_max": 1.0}])
    if not (correction and form == "pytorch")
] + [dict(momentum=0.0)]
CONFIG_IDS = ["-".join(f"{k}={v}" for k, v in c.items()) for c in CONFIGS]
OPTIONS = dict(weight_decay=1e-3, eta=0.02)


def lr_at(step: int, base: float = 0.2) -> float:
    """Warm-up then polynomial decay: the lr changes every step (momentum correction matters)."""
    return base * min(1.0, (step + 1) / 4) * (1.0 - step / 30) ** 2


def twin_models(dtype: torch.dtype, devices):
    models = []
    for device in devices:
        models.append(bn_cnn(seed=0).to(device=device, dtype=dtype))
    return models


def set_grads(models, generator: torch.Generator, scale: float = 0.05) -> None:
    """The same random gradient (drawn in float64 on the CPU) for corresponding parameters."""
    for params in zip(*(m.parameters() for m in models)):
        grad = torch.randn(params[0].shape, generator=generator, dtype=torch.float64) * scale
        for p in params:
            p.grad = grad.to(device=p.device, dtype=p.dtype)


def assert_models_close(cpu_model, gpu_model, rtol: float, atol: float) -> None:
    for i, (a, b) in enumerate(zip(cpu_model.parameters(), gpu_model.parameters())):
        torch.testing.assert_close(b.detach().cpu().double(), a.detach().double(), rtol=rtol, atol=atol,
                                   msg=lambda m: f"parameter {i}: {m}")


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_lars_on_cuda_equals_lars_on_cpu_in_float64(config):
    cpu, gpu = twin_models(torch.float64, ["cpu", cuda0()])
    opts = [LARS(m.parameters(), lr=lr_at(0), **OPTIONS, **config) for m in (cpu, gpu)]
    generator = torch.Generator().manual_seed(1)
    for t in range(6):
        set_grads([cpu, gpu], generator)
        for opt in opts:
            opt.param_groups[0]["lr"] = lr_at(t)
            opt.step()
        assert_models_close(cpu, gpu, rtol=1e-11, atol=1e-13)
    for p_cpu, p_gpu in zip(cpu.parameters(), gpu.parameters()):
        s_cpu, s_gpu = opts[0].state[p_cpu], opts[1].state[p_gpu]
        assert s_gpu.keys() == s_cpu.keys()
        for key, value in s_cpu.items():
            assert s_gpu[key].device.type == "cuda", key
            torch.testing.assert_close(s_gpu[key].cpu(), value, rtol=1e-11, atol=1e-13)


def test_lars_float32_on_cuda_matches_the_reference_loop_in_float64():
    ref_model, gpu = bn_cnn(seed=0).double(), bn_cnn(seed=0).to(cuda0())
    options = dict(momentum=0.9, weight_decay=1e-3, eta=0.02)
    ref = ReferenceLARS(ref_model.parameters(), lr=0.1, **options)
    opt = LARS(gpu.parameters(), lr=0.1, **options)
    generator = torch.Generator().manual_seed(2)
    for _ in range(5):
        set_grads([ref_model, gpu], generator)
        ref.step()
        opt.step()
    assert_models_close(ref_model, gpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_lars_step_reads_nothing_on_the_host(config, amp):
    """``step()`` promises no host synchronisation: checked by CUDA itself on every step,
    the first one (state allocation) included, with a norm hook and the AMP keywords."""
    device = cuda0()
    model = bn_cnn().to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 0.01
    opt = LARS(model.parameters(), lr=0.1, **OPTIONS, **config)
    opt.set_norm_hook(lambda w, g: (w * 2, g))  # device arithmetic only
    kwargs = ({"grad_scale": torch.full((), 1024.0, device=device), "found_inf": torch.zeros((), device=device)}
              if amp else {})
    torch.cuda.synchronize()
    for step in range(3):
        opt.param_groups[0]["lr"] = lr_at(step)
        try:
            with no_host_sync():
                opt.step(**kwargs)
        except RuntimeError as exc:
            pytest.fail(f"LARS step {step} synchronised with the host: {exc}", pytrace=True)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


SCALE = 2.0 ** 10


def make_lars(model, native_amp: bool) -> LARS:
    opt = LARS(model.parameters(), lr=lr_at(0), momentum=0.9, weight_decay=1e-2, eta=0.02,
               momentum_correction=True)
    if not native_amp:  # GradScaler then unscales and skips by itself
        opt._step_supports_amp_scaling = False
    return opt


@pytest.mark.parametrize("protocol", ["found_inf", "unscale_first", "scaler_skips"])
def test_lars_under_a_cuda_gradscaler_trains_like_unscaled_lars(protocol):
    device = cuda0()
    plain, scaled = bn_cnn().to(device), bn_cnn().to(device)
    opt_plain = LARS(plain.parameters(), lr=lr_at(0), momentum=0.9, weight_decay=1e-2, eta=0.02,
                     momentum_correction=True)
    opt_scaled = make_lars(scaled, native_amp=protocol != "scaler_skips")
    scaler = torch.amp.GradScaler("cuda", init_scale=SCALE)
    for t in range(8):
        x, y = (v.to(device) for v in batch(seed=t))
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
    assert scaler.get_scale() == SCALE  # no step was skipped
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    for p in plain.parameters():
        assert opt_plain.state[p]["step"].item() == 8


@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("protocol", ["found_inf", "unscale_first", "scaler_skips"])
def test_nonfinite_step_under_a_cuda_gradscaler_changes_nothing(protocol, bad):
    device = cuda0()
    model = bn_cnn().to(device)
    opt = make_lars(model, native_amp=protocol != "scaler_skips")
    scaler = torch.amp.GradScaler("cuda", init_scale=SCALE)
    (x, y), (x2, y2) = [(v.to(device) for v in batch(seed=s)) for s in (0, 1)]
    with torch.autocast("cuda", dtype=torch.float16):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    before = snapshot(model, opt)

    opt.zero_grad()
    opt.param_groups[0]["lr"] = lr_at(1)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = F.cross_entropy(model(x2), y2)
    scaler.scale(loss).backward()
    model[3].weight.grad[0, 0, 0, 0] = bad
    if protocol == "unscale_first":
        scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert_unchanged(before, model, opt)
    assert scaler.get_scale() == SCALE / 2


def test_lars_fp16_autocast_training_on_cuda_learns():
    """Real fp16 autocast with the default GradScaler (initial scale 2**16) on a learnable task:
    the loss falls and nothing becomes non-finite."""
    device = cuda0()
    model = bn_cnn().to(device)
    opt = LARS(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4, eta=0.02)
    scaler = torch.amp.GradScaler("cuda")
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (128,), generator=gen)
    x = torch.randn(128, 3, 8, 8, generator=gen) * 0.5
    x[torch.arange(128), y % 3, :, :] += 2.0 * (y[:, None, None].float() / 10)  # labels leave a trace
    x, y = x.to(device), y.to(device)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert min(losses[-5:]) < 0.8 * losses[0], losses


def test_lars_state_moves_from_a_cpu_checkpoint_onto_the_gpu():
    """A run checkpointed on the CPU and resumed on the GPU continues like the CPU run."""
    cpu = bn_cnn(seed=0).double()
    opt_cpu = LARS(cpu.parameters(), lr=lr_at(0), momentum=0.9, momentum_correction=True, **OPTIONS)
    generator = torch.Generator().manual_seed(4)
    for t in range(3):
        set_grads([cpu], generator)
        opt_cpu.param_groups[0]["lr"] = lr_at(t)
        opt_cpu.step()
    gpu = bn_cnn(seed=0).double().to(cuda0())
    gpu.load_state_dict(cpu.state_dict())
    opt_gpu = LARS(gpu.parameters(), lr=lr_at(0), momentum=0.9, momentum_correction=True, **OPTIONS)
    saved = io.BytesIO()  # a checkpoint file's round trip, loaded on the CPU: the optimizer moves it
    torch.save(opt_cpu.state_dict(), saved)
    saved.seek(0)
    opt_gpu.load_state_dict(torch.load(saved, weights_only=True))
    for p in gpu.parameters():
        assert opt_gpu.state[p]["momentum_buffer"].device.type == "cuda"
        assert opt_gpu.state[p]["last_lr"].device.type == "cuda"
        assert opt_gpu.state[p]["last_lr"].dtype == torch.float64
    for t in range(3, 6):
        set_grads([cpu, gpu], generator)
        for opt in (opt_cpu, opt_gpu):
            opt.param_groups[0]["lr"] = lr_at(t)
            opt.step()
    assert_models_close(cpu, gpu, rtol=1e-11, atol=1e-13)
    for p in gpu.parameters():
        assert opt_gpu.state[p]["step"].device.type == "cuda" and opt_gpu.state[p]["step"].item() == 6
