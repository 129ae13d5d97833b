"""The message quantizer of DQLOSP: norm-scaled uniform quantization to ``bits`` bits per value.

A message is a flat tensor made of consecutive *segments* (one per model tensor, say). Each
segment ``x`` is sent as its L2 norm ``n = ||x||_2`` (in the tensor's dtype) plus, per element, the
index ``j`` of a level on a uniform, symmetric grid over ``[-1, 1]``::

    L = 2**bits - 1 levels (bits=1: 2), level j = (2*j - (L-1)) / (L-1),  j = 0 .. L-1

chosen for ``v = x / n`` (all zeros when ``n == 0``). An odd number of levels puts one at exactly
0 (bits >= 2: {-1, 0, 1} at 2 bits), so small and zero values are not pushed to one side (with
2**bits levels there is no 0 level: every element moves by at least n/(2**bits - 1), and
deterministic rounding of zeros is biased); the one code left (``2**bits - 1``) is never sent.
The receiver rebuilds ``n * (2*j - (L-1)) / (L-1)``: the numerator is an exact integer, so the
grid is exactly symmetric, ``j = L-1`` gives ``+n``, ``j = 0`` gives ``-n`` and the middle 0, for
every ``bits`` in 1..16 and float32/float64.

The original research code mapped to its levels with an off-by-one, so its top level was never
used (a value at ``+n`` came back smaller). That is fixed here: both ends are reached.

Rounding:

* deterministic (default): ``j`` is the nearest level to ``v`` (``torch.round``, so a tie goes to
  the even index). The error is at most half a level step, ``|error| <= n/(L-1)`` per element.
* stochastic (``stochastic=True``): with ``u = (v+1)/2*(L-1)``, ``j = floor(u) + Bernoulli(u -
  floor(u))``, so ``E[j] = u`` and ``E[dequantize] = x``: unbiased (up to float rounding). Every
  segment draws from its own ``torch.Generator`` seeded with its own seed, so a segment's indices
  do not depend on how segments are grouped into messages (sharding).

Wire size: the indices of all segments are packed as one big-endian bit stream (index 0's most
significant bit first), ``ceil(sum(sizes) * bits / 8)`` bytes, plus one norm per segment:
:func:`quantized_nbytes` is the exact payload of one message.

Dequantization is deterministic: it runs on the CPU with fixed elementwise operations, so a server
and its workers calling :func:`dequantize` on the same bytes and norms get bit-identical tensors
(and so stay in step without sending full-precision values).

A segment whose norm is not finite (a NaN or infinite value, or values so large that the norm
overflows the dtype: a diverged gradient) is sent with norm NaN and indices 0, so the receiver sees
NaN there, as it would without compression.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["codes", "levels", "packed_nbytes", "pack_bits", "unpack_bits", "quantize", "dequantize", "quantized_nbytes"]

_MIN_BITS, _MAX_BITS = 1, 16
_FLOATS = (torch.float32, torch.float64)


def codes(bits: int) -> int:
    """The number of indices ``bits`` bits can hold, ``2**bits``; ``bits`` must be in 1..16."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not _MIN_BITS <= bits <= _MAX_BITS:
        raise ValueError(f"quantization bits {bits!r} is invalid: use an integer in {_MIN_BITS}..{_MAX_BITS}")
    return 2 ** bits


def levels(bits: int) -> int:
    """The number of quantization levels: ``2**bits - 1`` (odd: one level at 0), 2 for one bit."""
    return max(2, codes(bits) - 1)


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that ``count`` indices of ``bits`` bits take packed: ``ceil(count * bits / 8)``."""
    codes(bits)
    if count < 0:
        raise ValueError(f"index count {count} is invalid: use an integer >= 0")
    return (count * bits + 7) // 8


def _check_sizes(sizes: Sequence[int]) -> List[int]:
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"segment sizes {sizes} are invalid: every size must be >= 0")
    return sizes


def pack_bits(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a 1-D integer tensor of values in ``[0, 2**bits)`` into a uint8 tensor of
    :func:`packed_nbytes` bytes: one big-endian bit stream (first index's top bit first), the
    last byte padded with zero bits."""
    top = codes(bits)
    if indices.dim() != 1 or indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise ValueError(f"indices must be a 1-D integer tensor, got {indices.dtype} of shape {tuple(indices.shape)}")
    count = indices.numel()
    nbytes = packed_nbytes(count, bits)
    idx = indices.to(device="cpu", dtype=torch.int64)
    if count and (int(idx.min()) < 0 or int(idx.max()) >= top):
        raise ValueError(f"indices must lie in [0, {top}) for {bits} bits, "
                         f"got values in [{int(idx.min())}, {int(idx.max())}]")
    if bits % 8 == 0:  # whole bytes per index (8, 16): its bytes, most significant first
        per = bits // 8
        planes = [(idx >> (bits - 8 * (k + 1))) & 0xFF for k in range(per)]
        return torch.stack(planes, dim=1).reshape(-1).to(torch.uint8)
    if 8 % bits == 0:  # whole indices per byte (1, 2, 4): the first index in the top bits
        per = 8 // bits
        padded = torch.zeros(nbytes * per, dtype=torch.uint8)
        padded[:count] = idx
        groups = padded.view(nbytes, per)
        out = torch.zeros(nbytes, dtype=torch.uint8)
        for k in range(per):
            out |= groups[:, k] << (8 - bits * (k + 1))
        return out
    # any other width: one bit per uint8, bit planes most significant first, then 8 bits per byte
    stream = torch.zeros(nbytes * 8, dtype=torch.uint8)
    stream_bits = stream[:count * bits].view(count, bits)
    for k in range(bits):
        stream_bits[:, k] = (idx >> (bits - 1 - k)) & 1
    octets = stream.view(nbytes, 8)
    out = torch.zeros(nbytes, dtype=torch.uint8)
    for k in range(8):
        out |= octets[:, k] << (7 - k)
    return out


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first ``count`` indices of a :func:`pack_bits` stream, as an int64 tensor."""
    levels(bits)
    nbytes = packed_nbytes(count, bits)
    if packed.dim() != 1 or packed.dtype != torch.uint8:
        raise ValueError(f"packed must be a 1-D uint8 tensor, got {packed.dtype} of shape {tuple(packed.shape)}")
    if packed.numel() < nbytes:
        raise ValueError(f"packed holds {packed.numel()} bytes; {count} indices of {bits} bits need {nbytes}")
    data = packed[:nbytes].to(device="cpu", dtype=torch.int64)
    if bits % 8 == 0:
        per = bits // 8
        groups = data.view(-1, per)
        out = torch.zeros(count, dtype=torch.int64)
        for k in range(per):
            out = (out << 8) | groups[:, k]
        return out
    if 8 % bits == 0:
        per = 8 // bits
        mask = (1 << bits) - 1
        planes = [(data >> (8 - bits * (k + 1))) & mask for k in range(per)]
        return torch.stack(planes, dim=1).reshape(-1)[:count]
    stream = torch.stack([(data >> (7 - k)) & 1 for k in range(8)], dim=1).reshape(-1)
    stream_bits = stream[:count * bits].view(count, bits)
    out = torch.zeros(count, dtype=torch.int64)
    for k in range(bits):
        out = (out << 1) | stream_bits[:, k]
    return out


def quantize(flat: torch.Tensor, sizes: Sequence[int], bits: int, *, stochastic: bool = False,
             seeds: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Quantize the segments of ``flat`` (1-D float32/float64 CPU tensor, segment lengths
    ``sizes``) to ``bits`` bits per value.

    Returns ``(packed, norms)``: the level indices of all segments as one :func:`pack_bits` stream
    (``packed_nbytes(sum(sizes), bits)`` bytes) and one L2 norm per segment in ``flat``'s dtype.
    Deterministic rounding goes to the nearest level (ties to the even index); ``stochastic=True``
    rounds up or down at random, unbiased, segment ``s`` drawing from a generator seeded with
    ``seeds[s]`` (required then, one per segment).
    """
    top = levels(bits) - 1
    sizes = _check_sizes(sizes)
    if flat.dim() != 1 or flat.dtype not in _FLOATS or flat.device.type != "cpu":
        raise ValueError(f"flat must be a 1-D float32 or float64 CPU tensor, got {flat.dtype} of shape "
                         f"{tuple(flat.shape)} on {flat.device}")
    if sum(sizes) != flat.numel():
        raise ValueError(f"segment sizes sum to {sum(sizes)} but flat has {flat.numel()} elements")
    if stochastic:
        if seeds is None:
            raise ValueError("stochastic quantization needs seeds: one per segment")
        seeds = [int(s) for s in seeds]
        if len(seeds) != len(sizes):
            raise ValueError(f"stochastic quantization needs one seed per segment: {len(seeds)} seeds "
                             f"for {len(sizes)} segments")
    flat = flat.detach()
    segments = torch.split(flat, sizes)
    norms = torch.stack([torch.linalg.vector_norm(seg) for seg in segments]) if sizes else flat.new_zeros(0)
    finite = torch.isfinite(norms)
    norms = torch.where(finite, norms, torch.full_like(norms, math.nan))
    counts = torch.tensor(sizes, dtype=torch.int64)
    scale = torch.where(finite & (norms != 0), norms, torch.ones_like(norms)).repeat_interleave(counts)
    keep = (finite & (norms != 0)).repeat_interleave(counts)
    v = torch.where(keep, flat / scale, torch.zeros_like(flat))
    u = (v + 1) / 2 * top
    if stochastic:
        low = torch.floor(u)
        frac = u - low
        draws = torch.empty_like(u)
        offset = 0
        for size, seed in zip(sizes, seeds):
            generator = torch.Generator().manual_seed(seed)
            draws[offset:offset + size] = torch.rand(size, generator=generator, dtype=flat.dtype)
            offset += size
        j = low + (draws < frac).to(flat.dtype)
    else:
        j = torch.round(u)
    j = j.clamp_(0, top).to(torch.int64)
    j = torch.where(finite.repeat_interleave(counts), j, torch.zeros_like(j))
    return pack_bits(j, bits), norms


def dequantize(packed: torch.Tensor, norms: torch.Tensor, sizes: Sequence[int], bits: int,
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rebuild the flat tensor of a :func:`quantize` message, in ``norms``' dtype: segment ``s`` is
    ``norms[s] * ((2*j - (L-1)) / (L-1))``, computed on the CPU so every caller gets the
    same bits. Written into ``out`` (1-D, ``sum(sizes)`` elements, ``norms``' dtype, any device)
    when given, and returned."""
    top = levels(bits) - 1
    sizes = _check_sizes(sizes)
    if norms.dim() != 1 or norms.dtype not in _FLOATS:
        raise ValueError(f"norms must be a 1-D float32 or float64 tensor, got {norms.dtype} of shape "
                         f"{tuple(norms.shape)}")
    if norms.numel() != len(sizes):
        raise ValueError(f"{norms.numel()} norms for {len(sizes)} segments")
    total = sum(sizes)
    dtype = norms.dtype
    if out is not None and (tuple(out.shape) != (total,) or out.dtype != dtype):
        raise ValueError(f"out must be a {dtype} tensor of shape ({total},), got {out.dtype} of shape "
                         f"{tuple(out.shape)}")
    j = unpack_bits(packed, bits, total)
    unit = (j.to(dtype) * 2 - top) / top  # an exact integer over (L-1): one rounding, symmetric
    result = norms.detach().to("cpu").repeat_interleave(torch.tensor(sizes, dtype=torch.int64)) * unit
    if out is None:
        return result
    out.copy_(result)
    return out


def quantized_nbytes(sizes: Sequence[int], bits: int, norm_itemsize: int) -> int:
    """The exact payload of one message: ``packed_nbytes(sum(sizes), bits) + len(sizes) * norm_itemsize``."""
    sizes = _check_sizes(sizes)
    return packed_nbytes(sum(sizes), bits) + len(sizes) * norm_itemsize
