"""The DQLOSP message quantizer: bit packing, the byte count of a message, the level grid (both
ends reached, unlike the original's off-by-one), the error bound of deterministic rounding,
unbiased and reproducible stochastic rounding, segment independence, bit-identical dequantization,
and bad input."""

from __future__ import annotations

import math
from typing import List

import pytest
import torch

from crossover_sgd.comm.quantize import (codes, dequantize, levels, pack_bits, packed_nbytes, quantize, quantized_nbytes,
                                         unpack_bits)

ALL_BITS = list(range(1, 17))
DTYPES = [torch.float32, torch.float64]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_pack(indices: List[int], bits: int) -> List[int]:
    """The wire format written out by hand: one big-endian bit stream, zero-padded."""
    stream = "".join(format(i, f"0{bits}b") for i in indices)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[k:k + 8], 2) for k in range(0, len(stream), 8)]


def _bits_of(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(torch.int64 if tensor.dtype == torch.float64 else torch.int32)


# ---------------------------------------------------------------------------------------- packing

@pytest.mark.parametrize("bits", ALL_BITS)
def test_pack_unpack_round_trip_for_awkward_counts(bits):
    generator = _gen(bits)
    for count in (0, 1, 7, 8, 9, 1001):
        indices = torch.randint(0, 2 ** bits, (count,), generator=generator)
        packed = pack_bits(indices, bits)
        assert packed.dtype == torch.uint8 and packed.dim() == 1
        assert packed.numel() == packed_nbytes(count, bits) == math.ceil(count * bits / 8)
        unpacked = unpack_bits(packed, bits, count)
        assert unpacked.dtype == torch.int64
        assert torch.equal(unpacked, indices)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_packed_stream_is_big_endian_bit_stream(bits):
    indices = torch.randint(0, 2 ** bits, (13,), generator=_gen(100 + bits))
    indices[0], indices[-1] = 2 ** bits - 1, 0  # both extremes present
    assert pack_bits(indices, bits).tolist() == _reference_pack(indices.tolist(), bits)


def test_packed_known_bytes():
    assert pack_bits(torch.tensor([5, 1, 7]), 3).tolist() == [0b10100111, 0b10000000]
    assert pack_bits(torch.tensor([0xA, 0xB, 0xC]), 4).tolist() == [0xAB, 0xC0]
    assert pack_bits(torch.tensor([0x1234, 0xFFFF]), 16).tolist() == [0x12, 0x34, 0xFF, 0xFF]
    assert pack_bits(torch.tensor([1, 0, 1]), 1).tolist() == [0b10100000]


def test_unpack_reads_only_the_first_count_indices_and_needs_enough_bytes():
    indices = torch.tensor([3, 0, 2, 1, 3])
    packed = pack_bits(indices, 2)
    assert torch.equal(unpack_bits(packed, 2, 3), indices[:3])
    with pytest.raises(ValueError, match="need 3"):
        unpack_bits(packed[:1], 2, 9)


def test_pack_rejects_indices_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        pack_bits(torch.tensor([0, 8]), 3)
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([-1]), 3)
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([0.5]), 3)


# ------------------------------------------------------------------------------------- byte count

@pytest.mark.parametrize("bits", [1, 2, 3, 7, 8, 13, 16])
def test_message_bytes_equal_quantized_nbytes(bits):
    for sizes in ([3, 1000, 17], [1], [5, 0, 2], [64] * 4):
        for dtype in DTYPES:
            flat = torch.randn(sum(sizes), generator=_gen(7), dtype=dtype)
            packed, norms = quantize(flat, sizes, bits)
            assert norms.dtype == dtype and norms.shape == (len(sizes),)
            sent = packed.numel() * packed.element_size() + norms.numel() * norms.element_size()
            assert sent == quantized_nbytes(sizes, bits, norms.element_size())
            assert packed.numel() == math.ceil(sum(sizes) * bits / 8)


# ------------------------------------------------------------------------- deterministic rounding

@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_error_is_at_most_norm_over_levels_minus_one(bits, dtype):
    sizes = [3, 200, 17]
    flat = torch.randn(sum(sizes), generator=_gen(bits), dtype=dtype) * torch.tensor([1e-3, 1.0, 50.0],
                                                                                       dtype=dtype).repeat_interleave(
        torch.tensor(sizes))
    packed, norms = quantize(flat, sizes, bits)
    restored = dequantize(packed, norms, sizes, bits)
    eps = torch.finfo(dtype).eps
    for segment, back, norm in zip(flat.split(sizes), restored.split(sizes), norms):
        assert torch.isclose(norm, torch.linalg.vector_norm(segment))
        bound = norm / (levels(bits) - 1) + 8 * eps * norm
        assert (segment - back).abs().max() <= bound


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("stochastic", [False, True])
def test_top_and_bottom_levels_are_reached_exactly(bits, stochastic):
    # one nonzero element per segment: v is exactly +1 / -1, so it must land on the grid's ends
    for dtype in DTYPES:
        flat = torch.tensor([0.0, 2.5, 0.0, 0.0, -0.75, 0.0, 3.0], dtype=dtype)
        sizes = [3, 3, 1]
        packed, norms = quantize(flat, sizes, bits, stochastic=stochastic, seeds=[1, 2, 3] if stochastic else None)
        restored = dequantize(packed, norms, sizes, bits)
        assert norms.tolist() == [2.5, 0.75, 3.0]
        assert restored[1].item() == 2.5  # the original's off-by-one never used the top level
        assert restored[4].item() == -0.75
        assert restored[6].item() == 3.0
        indices = unpack_bits(packed, bits, 7)
        assert indices[1].item() == indices[6].item() == levels(bits) - 1
        assert indices[4].item() == 0


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("bits", [1, 2, 5, 8])
def test_zero_segment_stays_zero(stochastic, bits):
    flat = torch.cat([torch.randn(5, generator=_gen(3)), torch.zeros(6), torch.randn(2, generator=_gen(4))])
    sizes = [5, 6, 2]
    packed, norms = quantize(flat, sizes, bits, stochastic=stochastic, seeds=[5, 6, 7] if stochastic else None)
    assert norms[1].item() == 0.0
    restored = dequantize(packed, norms, sizes, bits)
    assert torch.equal(restored[5:11], torch.zeros(6))
    assert restored[:5].abs().sum() > 0


def test_sixteen_bits_float64_reconstruction_is_close():
    flat = torch.randn(5000, generator=_gen(11), dtype=torch.float64)
    packed, norms = quantize(flat, [5000], 16)
    restored = dequantize(packed, norms, [5000], 16)
    assert restored.dtype == torch.float64
    assert (restored - flat).abs().max() <= norms[0] / 65535
    assert torch.allclose(restored, flat, rtol=0, atol=2e-3)


def test_deterministic_ties_round_to_even_index():
    # bits=2: levels {-1, 0, 1}; a segment of 0.5s has norm 1, u = 1.5 exactly: the even index 2;
    # -0.5s give u = 0.5: index 0
    packed, _ = quantize(torch.tensor([0.5] * 4 + [-0.5] * 4), [4, 4], 2)
    assert unpack_bits(packed, 2, 8).tolist() == [2] * 4 + [0] * 4


@pytest.mark.parametrize("bits", [2, 3, 8, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_is_a_level_and_the_grid_is_symmetric(bits, dtype):
    flat = torch.tensor([3.0, 0.0, -3.0, 1e-9], dtype=dtype)
    packed, norms = quantize(flat, [4], bits)
    restored = dequantize(packed, norms, [4], bits)
    assert restored[1].item() == 0.0 and restored[3].item() == 0.0  # no push to one side
    assert restored[0].item() == -restored[2].item() > 0
    top = levels(bits) - 1
    j = torch.arange(top + 1)
    grid = dequantize(pack_bits(j, bits), torch.ones(1, dtype=dtype), [top + 1], bits)
    assert torch.equal(grid, -grid.flip(0))  # exactly symmetric
    assert grid[0].item() == -1.0 and grid[-1].item() == 1.0 and grid[top // 2].item() == 0.0


def test_non_finite_segment_is_sent_as_nan():
    flat = torch.tensor([1.0, float("inf"), 2.0, 3.0, float("nan")])
    packed, norms = quantize(flat, [2, 2, 1], 4)
    assert math.isnan(norms[0].item()) and math.isnan(norms[2].item())
    restored = dequantize(packed, norms, [2, 2, 1], 4)
    assert torch.isnan(restored[[0, 1, 4]]).all()
    assert torch.isfinite(restored[2:4]).all()


# ---------------------------------------------------------------------------- stochastic rounding

def test_stochastic_rounding_is_unbiased():
    bits, draws = 2, 2000
    top = levels(bits) - 1
    flat = torch.randn(24, generator=_gen(21), dtype=torch.float64)
    sizes = [10, 14]
    # 2000 draws in one message: the vector repeated, every copy's segments with their own seeds
    # (segments are independent, see test_segment_indices_do_not_depend_on_grouping)
    packed, norms = quantize(flat.repeat(draws), sizes * draws, bits, stochastic=True,
                             seeds=list(range(2 * draws)))
    mean = dequantize(packed, norms, sizes * draws, bits).view(draws, -1).mean(dim=0)
    # each element is norm * level, the level either of two neighbours 2/top apart, the upper one
    # with probability p = frac(u): variance (norm * 2/top)**2 * p * (1 - p)
    norms = torch.stack([torch.linalg.vector_norm(s) for s in flat.split(sizes)]).repeat_interleave(
        torch.tensor(sizes))
    u = (flat / norms + 1) / 2 * top
    p = u - torch.floor(u)
    stderr = norms * (2 / top) * torch.sqrt(p * (1 - p) / draws)
    assert (stderr > 0).all()
    assert ((mean - flat).abs() <= 5 * stderr + 1e-12).all()
    # and deterministic rounding is biased on this vector, so the check has teeth
    packed, det_norms = quantize(flat, sizes, bits)
    assert ((dequantize(packed, det_norms, sizes, bits) - flat).abs() > 5 * stderr + 1e-12).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_is_reproducible_from_seeds(dtype):
    flat = torch.randn(300, generator=_gen(31), dtype=dtype)
    sizes = [100, 200]
    first = quantize(flat, sizes, 3, stochastic=True, seeds=[7, 8])
    again = quantize(flat, sizes, 3, stochastic=True, seeds=[7, 8])
    other = quantize(flat, sizes, 3, stochastic=True, seeds=[9, 8])
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # only the first segment's indices changed with its seed
    a, b = unpack_bits(first[0], 3, 300), unpack_bits(other[0], 3, 300)
    assert not torch.equal(a[:100], b[:100])
    assert torch.equal(a[100:], b[100:])


@pytest.mark.parametrize("stochastic", [True, False])
def test_segment_indices_do_not_depend_on_grouping(stochastic):
    bits = 5
    a = torch.randn(50, generator=_gen(41))
    b = torch.randn(37, generator=_gen(42))
    c = torch.randn(9, generator=_gen(43))
    seeds = {"a": 11, "b": 22, "c": 33}
    kw = lambda names: dict(stochastic=stochastic, seeds=[seeds[n] for n in names] if stochastic else None)
    together, together_norms = quantize(torch.cat([a, b, c]), [50, 37, 9], bits, **kw("abc"))
    alone_b, alone_b_norms = quantize(b, [37], bits, **kw("b"))
    pair, pair_norms = quantize(torch.cat([b, c]), [37, 9], bits, **kw("bc"))
    whole = unpack_bits(together, bits, 96)
    assert torch.equal(whole[50:87], unpack_bits(alone_b, bits, 37))
    assert torch.equal(whole[50:], unpack_bits(pair, bits, 46))
    assert torch.equal(together_norms[1:], pair_norms) and torch.equal(together_norms[1:2], alone_b_norms)
    restored = dequantize(together, together_norms, [50, 37, 9], bits)
    assert torch.equal(_bits_of(restored[50:]), _bits_of(dequantize(pair, pair_norms, [37, 9], bits)))


# --------------------------------------------------------------------------------- dequantization

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [1, 3, 8, 16])
def test_dequantize_is_bit_identical_and_writes_into_out(dtype, bits):
    sizes = [3, 1000, 17]
    flat = torch.randn(sum(sizes), generator=_gen(51), dtype=dtype)
    packed, norms = quantize(flat, sizes, bits, stochastic=True, seeds=[1, 2, 3])
    first = dequantize(packed, norms, sizes, bits)
    second = dequantize(packed.clone(), norms.clone(), sizes, bits)
    assert first.dtype == dtype and first.shape == flat.shape
    assert torch.equal(_bits_of(first), _bits_of(second))
    out = torch.full_like(flat, 123.0)
    returned = dequantize(packed, norms, sizes, bits, out=out)
    assert returned is out
    assert torch.equal(_bits_of(out), _bits_of(first))


def test_dequantize_checks_out_shape_and_dtype():
    packed, norms = quantize(torch.randn(10, generator=_gen(61)), [4, 6], 4)
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        dequantize(packed, norms, [4, 6], 4, out=torch.empty(9))
    with pytest.raises(ValueError):
        dequantize(packed, norms, [4, 6], 4, out=torch.empty(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="2 norms for 3 segments"):
        dequantize(packed, norms, [4, 3, 3], 4)


# ------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("bits", [0, 17, -1])
def test_bits_out_of_range_are_rejected_by_name(bits):
    with pytest.raises(ValueError, match=rf"bits {bits} is invalid.*1\.\.16"):
        levels(bits)
    with pytest.raises(ValueError, match=rf"bits {bits} is invalid"):
        quantize(torch.ones(4), [4], bits)
    with pytest.raises(ValueError, match=rf"bits {bits} is invalid"):
        pack_bits(torch.zeros(4, dtype=torch.int64), bits)


def test_levels_of_valid_bits():
    assert [levels(b) for b in (1, 2, 8, 16)] == [2, 3, 255, 65535]  # odd: one level at 0
    assert [codes(b) for b in (1, 2, 8, 16)] == [2, 4, 256, 65536]


def test_sizes_must_sum_to_numel():
    with pytest.raises(ValueError, match="sum to 9 but flat has 10"):
        quantize(torch.ones(10), [4, 5], 4)
    with pytest.raises(ValueError):
        quantize(torch.ones(10), [4, 7], 4)


def test_stochastic_needs_one_seed_per_segment():
    with pytest.raises(ValueError, match="needs seeds"):
        quantize(torch.ones(10), [4, 6], 4, stochastic=True)
    with pytest.raises(ValueError, match="one seed per segment"):
        quantize(torch.ones(10), [4, 6], 4, stochastic=True, seeds=[1])


def test_flat_must_be_one_dimensional_float32_or_float64():
    with pytest.raises(ValueError, match="float32 or float64"):
        quantize(torch.ones(4, dtype=torch.float16), [4], 4)
    with pytest.raises(ValueError, match="1-D"):
        quantize(torch.ones(2, 2), [4], 4)
