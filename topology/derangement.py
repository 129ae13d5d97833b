"""Uniform random derangements that every rank can draw without communicating.

A *derangement* of ``n`` ranks is a permutation ``p`` of ``0..n-1`` with no fixed
point (``p[i] != i`` for every ``i``); there are ``D_n = n! * sum_k (-1)^k / k!``
of them (``D_2 = 1, D_3 = 2, D_4 = 9, D_5 = 44``).

Random stream
    Every draw is keyed by three non-negative integers ``(seed, round, segment)``::

        bit_generator = numpy.random.PCG64(numpy.random.SeedSequence([seed, round, segment]))

    and only the *raw* 64-bit output of that bit generator is consumed
    (``bit_generator.random_raw``). ``SeedSequence`` hashing and the PCG64 raw
    stream are covered by NumPy's stream-compatibility policy (NEP 19) on every
    platform and NumPy version; the sampling methods of ``numpy.random.Generator``
    are not, so they are deliberately avoided. Python's ``hash()`` is never used.
    Hence every process computes bit-identical maps from the same key.

Derangement sampler (exact rejection sampling, documented so it can be re-implemented)
    1. Consume ``n`` raw 64-bit words ``u_0..u_{n-1}`` from the stream.
    2. If two words are equal, reject the block (probability < n^2 / 2^65).
    3. Otherwise let ``p = argsort(u)``: because the words are i.i.d. and distinct,
       every ordering is equally likely, so ``p`` is a uniform permutation.
    4. Accept ``p`` if it has no fixed point, else go to 1 with the next block.
    Conditioning a uniform permutation on "no fixed point" gives the uniform
    distribution over the ``D_n`` derangements; the expected number of blocks is
    ``n! / D_n`` (2 for n = 2, 3 for n = 3, then -> e = 2.718...).
    The result is *the first accepted block of the stream*; the implementation
    reads several blocks per call for speed, which does not change the result.

"No fairness" sampler (the ablation)
    Each rank ``i`` independently receives from ``(i + 1 + b_i) mod n`` where
    ``b_i`` is uniform on ``0..n-2``: a uniform choice among the other ranks, so
    one rank may be picked by several receivers. ``b_i`` comes from one raw word
    per rank with exact rejection of the top ``2^64 mod (n-1)`` values (rejected
    entries are redrawn, in increasing rank order, from the following words).
"""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = [
    "DERANGEMENT_METHOD",
    "count_derangements",
    "key_bit_generator",
    "sample_derangement",
    "sample_other_ranks",
    "derangement",
    "other_ranks_map",
    "expected_attempts",
]

DERANGEMENT_METHOD = (
    "rejection sampling: uniform permutation = argsort of n distinct raw PCG64 words, "
    "accepted when it has no fixed point"
)

_TWO64 = 1 << 64
# Upper bound on the raw words read per vectorised attempt (speed only; the
# accepted block, and thus the result, does not depend on it).
_WORDS_PER_ATTEMPT = 4096
_MAX_BLOCKS_PER_ATTEMPT = 4


def _nonneg_int(name: str, value: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or v < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return v


def count_derangements(n: int) -> int:
    """Return ``D_n``, the number of derangements of ``n`` elements (``D_0 = 1``)."""
    n = _nonneg_int("n", n)
    d_prev, d = 1, 0  # D_0, D_1
    if n == 0:
        return 1
    for k in range(2, n + 1):
        d_prev, d = d, (k - 1) * (d + d_prev)
    return d


def key_bit_generator(seed: int, round: int, segment: int) -> np.random.PCG64:
    """Return the PCG64 bit generator keyed by ``SeedSequence([seed, round, segment])``."""
    entropy = [
        _nonneg_int("seed", seed),
        _nonneg_int("round", round),
        _nonneg_int("segment", segment),
    ]
    return np.random.PCG64(np.random.SeedSequence(entropy))


def sample_derangement(n: int, bit_generator: np.random.PCG64) -> np.ndarray:
    """Draw a uniform derangement of ``n >= 2`` elements from ``bit_generator``.

    Returns an ``int64`` array ``p`` with ``sorted(p) == range(n)`` and ``p[i] != i``.
    See the module docstring for the exact (stream-defined) algorithm.
    """
    n = _nonneg_int("n", n)
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2 elements, got n={n}")
    identity = np.arange(n)
    blocks = max(1, min(_MAX_BLOCKS_PER_ATTEMPT, _WORDS_PER_ATTEMPT // n))
    while True:
        words = bit_generator.random_raw(blocks * n).reshape(blocks, n)
        # argsort's tie order is irrelevant: blocks with ties are rejected below
        perms = words.argsort(axis=1)
        for b in np.flatnonzero(~(perms == identity).any(axis=1)).tolist():
            ordered = np.sort(words[b])
            if (ordered[1:] != ordered[:-1]).all():
                return perms[b].astype(np.int64, copy=False)


def _uniform_below(m: int, size: int, bit_generator: np.random.PCG64) -> np.ndarray:
    """``size`` exact uniform integers in ``0..m-1`` from raw words (rejection of the top)."""
    words = bit_generator.random_raw(size)
    rem = _TWO64 % m
    if rem:
        limit = np.uint64(_TWO64 - rem)
        bad = np.flatnonzero(words >= limit)
        while bad.size:
            words[bad] = bit_generator.random_raw(bad.size)
            bad = bad[words[bad] >= limit]
    return (words % np.uint64(m)).astype(np.int64)


def sample_other_ranks(n: int, bit_generator: np.random.PCG64) -> np.ndarray:
    """Draw the "no fairness" map: ``q[i]`` uniform over ``{0..n-1} - {i}``, independently.

    ``q`` is in general not a permutation (a rank may be chosen several times).
    """
    n = _nonneg_int("n", n)
    if n < 2:
        raise ValueError(f"choosing another rank needs n >= 2, got n={n}")
    offsets = 1 + _uniform_below(n - 1, n, bit_generator)
    return (np.arange(n) + offsets) % n


def derangement(n: int, seed: int, round: int, segment: int = 0) -> np.ndarray:
    """The uniform derangement keyed by ``(seed, round, segment)`` (``n >= 2``)."""
    return sample_derangement(n, key_bit_generator(seed, round, segment))


def other_ranks_map(n: int, seed: int, round: int, segment: int = 0) -> np.ndarray:
    """The "no fairness" map keyed by ``(seed, round, segment)`` (``n >= 2``)."""
    return sample_other_ranks(n, key_bit_generator(seed, round, segment))


def expected_attempts(n: int) -> float:
    """Expected number of n-word blocks the derangement sampler consumes: ``n! / D_n``."""
    n = _nonneg_int("n", n)
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2 elements, got n={n}")
    return math.factorial(n) / count_derangements(n)
