"""FlatParams: copy mode round-trips; shared-storage mode moves tensors into the flat buffers
(strides kept), sees optimizer steps without copying, and re-adopts replaced tensors."""

from __future__ import annotations

import torch
from torch import nn

from crossover_sgd.comm import FlatParams


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def _lives_in(tensor: torch.Tensor, buffer: torch.Tensor) -> bool:
    start = buffer.data_ptr()
    end = start + buffer.numel() * buffer.element_size()
    return start <= tensor.data_ptr() < end


def test_copy_mode_packs_and_unpacks_every_dtype():
    a, b = torch.randn(3, 4), torch.arange(5)
    flat = FlatParams([a, b])
    floats, ints = flat.pack()
    assert torch.equal(floats, a.reshape(-1)) and torch.equal(ints, b)
    assert flat.nbytes == 12 * 4 + 5 * 8
    floats.mul_(2)
    flat.unpack()
    assert not _lives_in(a, floats)
    assert torch.equal(a, floats.view(3, 4))


def test_shared_storage_moves_parameters_into_the_buffer_and_keeps_values_and_strides():
    model = _model().to(memory_format=torch.channels_last)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = list(model.parameters())
    flat = FlatParams(params, share_storage=True)
    (buffer,) = flat.buffers.values()
    assert all(_lives_in(p, buffer) for p in params)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.requires_grad and p.is_leaf for p in params)
    buffer.mul_(3)  # writing the buffer writes the parameters, with no unpack
    assert torch.equal(model[3].bias, before["3.bias"] * 3)


def test_shared_storage_sees_optimizer_steps_without_copying():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    flat = FlatParams(list(model.parameters()), share_storage=True)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    (packed,) = flat.pack()
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(packed, expected)
    assert packed.data_ptr() == flat.buffers[torch.float32].data_ptr()


def test_tensors_given_new_storage_are_moved_in_again_by_pack():
    model = _model()
    params = list(model.parameters())
    flat = FlatParams(params, share_storage=True)
    (buffer,) = flat.buffers.values()
    weight = model[3].weight
    weight.data = weight.data.clone() + 1  # what Module._apply or a careless user may do
    assert not _lives_in(weight, buffer)
    (packed,) = flat.pack()
    assert _lives_in(weight, buffer)
    assert torch.equal(packed, torch.cat([p.detach().reshape(-1) for p in params]))


def test_tensors_that_are_not_dense_stay_in_copy_mode():
    base = torch.randn(4, 6)
    strided = base[:, ::2]  # not contiguous: cannot live in a flat region with its strides
    dense = torch.randn(5)
    flat = FlatParams([strided, dense], share_storage=True)
    (buffer,) = flat.buffers.values()
    assert _lives_in(dense, buffer) and not _lives_in(strided, buffer)
    buffer.add_(1)
    flat.unpack()
    assert torch.equal(strided, buffer[:12].view(4, 3))
    assert torch.equal(base[:, ::2], strided)  # written through to the original storage
