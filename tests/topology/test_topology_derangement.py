"""Shared-seed derangements: same on every process, exactly the documented stream, uniform."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from topology import (
    CrossoverSchedule,
    count_derangements,
    derangement,
    expected_attempts,
    key_bit_generator,
    other_ranks_map,
    sample_derangement,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_SEEDS = 1000
MAX_N = 64
SEGMENTS = 2
ROUND = 3

# Each worker is a fresh interpreter (a "rank"); they visit (seed, n) in different
# orders and through different entry points, so hidden state would show up.
_WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from topology import CrossoverSchedule
    out, order = sys.argv[1], sys.argv[2]
    seeds, sizes = list(range({seeds})), list(range(1, {max_n} + 1))
    if order == "reverse":
        seeds.reverse()
        sizes.reverse()
    maps = {{n: np.empty(({seeds}, {segments}, n), dtype=np.int16) for n in sizes}}
    for n in sizes:
        for seed in seeds:
            sched = CrossoverSchedule(n, {segments}, seed)
            if order == "reverse":
                maps[n][seed] = sched.peers({round}).recv_from
            else:
                maps[n][seed] = sched.recv_from({round})
    np.savez(out, **{{f"n{{n}}": m for n, m in maps.items()}})
    """
).format(seeds=NUM_SEEDS, max_n=MAX_N, segments=SEGMENTS, round=ROUND)


def _run_workers(tmp_path: Path) -> list[dict[str, np.ndarray]]:
    procs, outs = [], []
    for i, order in enumerate(("forward", "reverse")):
        out = tmp_path / f"rank{i}.npz"
        env = dict(os.environ, PYTHONHASHSEED=str(i * 977 + 1))  # hash() must not matter
        procs.append(subprocess.Popen([sys.executable, "-c", _WORKER, str(out), order],
                                      cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE))
        outs.append(out)
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    return [dict(np.load(o)) for o in outs]


def test_every_process_derives_the_same_derangements(tmp_path):
    first, second = _run_workers(tmp_path)
    assert sorted(first) == sorted(second) == sorted(f"n{n}" for n in range(1, MAX_N + 1))
    for n in range(1, MAX_N + 1):
        a, b = first[f"n{n}"], second[f"n{n}"]
        np.testing.assert_array_equal(a, b, err_msg=f"n={n}")
        ranks = np.arange(n)
        # a permutation: every rank receives exactly one copy and sends exactly one copy
        assert np.array_equal(np.sort(a, axis=-1), np.broadcast_to(ranks, a.shape)), n
        if n == 1:
            assert np.all(a == 0)  # no peer: identity means "no communication"
        else:
            assert not np.any(a == ranks), f"fixed point for n={n}"
    # the in-process construction and the per-segment keyed function agree too
    for seed, n in [(0, 2), (17, 5), (999, 64), (500, 33)]:
        expected = np.stack([derangement(n, seed, ROUND, s) for s in range(SEGMENTS)])
        np.testing.assert_array_equal(first[f"n{n}"][seed], expected)


def _documented_sampler(n: int, seed: int, round: int, segment: int) -> np.ndarray:
    """The module docstring's algorithm, one n-word block at a time."""
    bitgen = np.random.PCG64(np.random.SeedSequence([seed, round, segment]))
    while True:
        words = bitgen.random_raw(n)
        if len(set(words.tolist())) < n:
            continue
        perm = np.argsort(words, kind="stable")
        if all(perm[i] != i for i in range(n)):
            return perm


@pytest.mark.parametrize("n", [2, 3, 4, 7, 64, 513, 5000])
def test_sampler_follows_the_documented_stream(n):
    for seed, round, segment in [(0, 0, 0), (1, 2, 3), (2**40, 7, 1), (12345, 99, 0)]:
        np.testing.assert_array_equal(derangement(n, seed, round, segment),
                                      _documented_sampler(n, seed, round, segment))


def test_keys_are_distinct_and_validated():
    n = 32
    base = derangement(n, 5, 6, 7)
    for other in [(6, 6, 7), (5, 7, 7), (5, 6, 8), (6, 5, 7)]:
        assert not np.array_equal(base, derangement(n, *other))
    with pytest.raises(ValueError, match="seed"):
        key_bit_generator(-1, 0, 0)
    with pytest.raises(ValueError, match="round"):
        CrossoverSchedule(4, 1, 0).recv_from(-2)
    with pytest.raises(ValueError, match="n >= 2"):
        sample_derangement(1, key_bit_generator(0, 0, 0))


def test_count_derangements_and_expected_attempts():
    assert [count_derangements(n) for n in range(8)] == [1, 0, 1, 2, 9, 44, 265, 1854]
    for n in range(2, 8):
        brute = sum(all(p[i] != i for i in range(n)) for p in itertools.permutations(range(n)))
        assert count_derangements(n) == brute
    assert expected_attempts(2) == 2.0 and expected_attempts(3) == 3.0
    assert expected_attempts(40) == pytest.approx(math.e, rel=1e-12)


def _chi2_sf_even_dof(x: float, dof: int) -> float:
    """Survival function of chi-square with an even number of degrees of freedom."""
    half = x / 2.0
    return math.exp(-half) * sum(half**j / math.factorial(j) for j in range(dof // 2))


def _uniformity_p_value(samples: np.ndarray, support: list[tuple[int, ...]]) -> float:
    index = {p: i for i, p in enumerate(support)}
    counts = np.zeros(len(support))
    for row in map(tuple, samples.tolist()):
        counts[index[row]] += 1  # KeyError if a sample is outside the support
    expected = len(samples) / len(support)
    stat = float(np.sum((counts - expected) ** 2 / expected))
    return _chi2_sf_even_dof(stat, len(support) - 1)


def test_sampler_is_uniform_over_the_nine_derangements_of_four():
    support = [p for p in itertools.permutations(range(4)) if all(p[i] != i for i in range(4))]
    assert len(support) == 9
    samples = np.stack([derangement(4, 2024, t, 0) for t in range(18_000)])
    assert _uniformity_p_value(samples, support) > 1e-4
    # negative control: Sattolo's algorithm only makes 4-cycles (6 of the 9), which the test rejects
    rng = np.random.default_rng(0)
    sattolo = []
    for _ in range(18_000):
        p = list(range(4))
        for i in range(3, 0, -1):
            j = int(rng.integers(0, i))
            p[i], p[j] = p[j], p[i]
        sattolo.append(p)
    assert _uniformity_p_value(np.array(sattolo), support) < 1e-10


def test_no_fairness_map_is_uniform_over_other_ranks_and_not_a_permutation():
    n = 5
    maps = np.stack([other_ranks_map(n, 11, t, 2) for t in range(8_000)])
    assert not np.any(maps == np.arange(n))
    # receiver 0 picks each of the 4 others equally often
    p_value = _uniformity_p_value(maps[:, :1], [(j,) for j in range(1, n)])
    assert p_value > 1e-4
    is_perm = np.all(np.sort(maps, axis=1) == np.arange(n), axis=1)
    assert 0 < is_perm.sum() < len(maps)  # mostly not load balanced
    assert is_perm.mean() == pytest.approx(44 / 4**5, abs=0.02)  # D_5 / (n-1)^n
