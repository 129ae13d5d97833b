"""step() reads no tensor value on the host.

``torch.cuda.set_sync_debug_mode`` needs a GPU, so two CPU-side substitutes:

* run step() on the ``meta`` device, where tensors have no data: ``.item()``,
  ``float(t)``, ``bool(t)`` and data-dependent ops raise (the per-parameter
  reference, which calls ``.item()``, is shown to fail there);
* run step() on CPU with the Python-level ways of reading a value patched to raise.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from lars import LARS
from lars.reference import ReferenceLARS

CONFIGS = [
    dict(momentum_form=form, nesterov=nesterov, momentum_correction=correction, **clip)
    for form, nesterov, correction, clip in itertools.product(
        ["mxnet", "pytorch"], [False, True], [False, True],
        [{}, {"larc": True}, {"trust_ratio_max": 1.0}])
    if not (correction and form == "pytorch")
] + [dict(momentum=0.0)]


def _model_with_grads(make_cnn, device: str) -> torch.nn.Module:
    model = make_cnn().to(device)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    return model


def _amp_kwargs(device: str, amp: bool) -> dict[str, torch.Tensor]:
    if not amp:
        return {}
    return {"grad_scale": torch.full((), 1024.0, device=device),
            "found_inf": torch.zeros((), device=device)}


def test_meta_device_detects_host_reads(make_cnn):
    model = _model_with_grads(make_cnn, "meta")
    with pytest.raises(RuntimeError, match="meta"):
        ReferenceLARS(model.parameters(), lr=0.1).step()


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_step_on_meta_device(config, amp, make_cnn):
    model = _model_with_grads(make_cnn, "meta")
    opt = LARS(model.parameters(), lr=0.1, weight_decay=1e-4, **config)
    opt.set_norm_hook(lambda w, g: (w * 2, g))
    for _ in range(2):
        opt.step(**_amp_kwargs("meta", amp))
    assert all(p.device.type == "meta" for p in model.parameters())


class _HostRead(RuntimeError):
    pass


@pytest.fixture
def forbid_host_reads(monkeypatch):
    """Make every Python-level way of reading a tensor value raise."""
    def refuse(*_args, **_kwargs):
        raise _HostRead("host read of a tensor value inside step()")

    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__",
                 "__complex__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_step_on_cpu_without_host_reads(amp, make_cnn, request):
    model = _model_with_grads(make_cnn, "cpu")
    opt = LARS(model.parameters(), lr=0.1, weight_decay=1e-4, momentum_correction=True,
               nesterov=True, larc=True)
    opt.set_norm_hook(lambda w, g: (w, g))
    kwargs = _amp_kwargs("cpu", amp)
    request.getfixturevalue("forbid_host_reads")
    opt.step(**kwargs)
    opt.step(**kwargs)
    with pytest.raises(_HostRead):  # the patch is active: the reference trips it
        ReferenceLARS(model.parameters(), lr=0.1).step()
