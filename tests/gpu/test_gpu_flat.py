"""FlatParams (crossover_sgd/comm/flat.py) on the GPU, and the gossip family's local work on it.

With ``share_storage=True`` (what every gossip round uses) the parameters and float buffers of a
model on the GPU are moved into one device buffer per dtype: they share its storage, keep their
strides (channels_last survives), keep their values, and optimizer steps, forward and backward
write and read them there; ``pack()`` copies nothing. Copy mode round-trips; scratch buffers and
snapshots live on the device in the wire dtype; the finite check before a round runs there.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from crossover_sgd.algorithms.gossip.base import GossipAlgorithm
from crossover_sgd.comm import FlatParams, model_state_tensors
from crossover_sgd.errors import DivergedError
from gpu_support import GPU_MARKS, batch, bn_cnn, cuda0

pytestmark = GPU_MARKS


def lives_in(tensor: torch.Tensor, buffer: torch.Tensor) -> bool:
    start = buffer.data_ptr()
    return (tensor.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
            and start <= tensor.data_ptr() < start + buffer.numel() * buffer.element_size())


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_shared_flat_params_live_on_the_device_and_share_storage(channels_last):
    device = cuda0()
    model = bn_cnn().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    tensors = model_state_tensors(model)
    before = [t.detach().clone() for t in tensors]
    strides = [t.stride() for t in tensors]
    flat = FlatParams(tensors, share_storage=True)

    assert set(flat.buffers) == {torch.float32}  # int64 num_batches_tracked is not a float buffer
    (buffer,) = flat.buffers.values()
    assert buffer.device == device and buffer.numel() == sum(t.numel() for t in tensors)
    for i, (t, old, stride) in enumerate(zip(tensors, before, strides)):
        assert t.device == device
        assert lives_in(t, buffer), f"tensor {i} does not live in the flat buffer"
        assert t.stride() == stride, f"tensor {i} lost its strides"
        assert torch.equal(t, old), f"tensor {i} changed value when it moved in"
    if channels_last:
        for p in model.parameters():
            if p.dim() == 4:
                assert p.is_contiguous(memory_format=torch.channels_last)

    packed = flat.pack()
    assert packed[0].data_ptr() == buffer.data_ptr()  # no copy: the buffer itself

    # optimizer steps, forward and backward work on the tensors living in the buffer
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    x, y = (v.to(device) for v in batch())
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    checksum = buffer.double().sum().item()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    torch.cuda.synchronize()
    assert buffer.double().sum().item() != checksum  # the step wrote the buffer
    assert all(lives_in(p, buffer) for p in model.parameters())
    # and writing the buffer writes the parameters
    with torch.no_grad():
        buffer.zero_()
    assert all(bool((p == 0).all()) for p in model.parameters())


def test_copy_mode_packs_and_unpacks_every_dtype_on_the_device():
    device = cuda0()
    a = torch.randn(3, 4, device=device)
    b = torch.arange(5, device=device)
    c = torch.randn(2, 2, device=device, dtype=torch.bfloat16)
    flat = FlatParams([a, b, c])
    floats, ints, halves = (flat.buffers[d] for d in (torch.float32, torch.int64, torch.bfloat16))
    assert all(buf.device == device for buf in (floats, ints, halves))
    flat.pack()
    assert torch.equal(floats, a.reshape(-1)) and torch.equal(ints, b) and torch.equal(halves, c.reshape(-1))
    assert not lives_in(a, floats)
    floats.mul_(2)
    halves.add_(1)
    expected_a, expected_c = a * 2, c + 1
    flat.unpack()
    assert torch.equal(a, expected_a) and torch.equal(c, expected_c)
    assert flat.nbytes == 12 * 4 + 5 * 8 + 4 * 2


def test_scratch_and_snapshot_live_on_the_device_in_the_wire_dtype():
    device = cuda0()
    model = bn_cnn().to(device)
    flat = FlatParams(model_state_tensors(model), share_storage=True)
    wire = flat.scratch(dtype=torch.bfloat16, slot="recv")
    assert [(s.device, s.dtype) for s in wire] == [(device, torch.bfloat16)]
    assert flat.scratch(dtype=torch.bfloat16, slot="recv")[0] is wire[0]  # allocated once
    sent = flat.snapshot(flat.pack())
    assert sent[0].device == device and sent[0].data_ptr() != flat.pack()[0].data_ptr()
    assert torch.equal(sent[0], flat.pack()[0])


def test_the_finite_check_before_a_round_runs_on_device_buffers():
    device = cuda0()
    fake = types.SimpleNamespace(ctx=types.SimpleNamespace(rank=0), name="crossover", round=3)
    good = [torch.randn(100, device=device), torch.randn(10, device=device).bfloat16(),
            torch.arange(4, device=device)]
    GossipAlgorithm.check_finite(fake, good)
    for bad in (float("inf"), float("-inf"), float("nan")):
        buffers = [b.clone() for b in good]
        buffers[1][3] = bad
        with pytest.raises(DivergedError, match="not finite in crossover round 3"):
            GossipAlgorithm.check_finite(fake, buffers)
