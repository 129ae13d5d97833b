"""The paired comparison over seeds (crossover_sgd.experiments.stats) on inputs whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crossover_sgd.experiments import stats
from crossover_sgd.experiments.stats import (NO_DATA, REPRODUCES, REVERSES, UNCLEAR, bootstrap_interval, compare_paired,
                                             paired_differences, t_interval, t_quantile)

#: Student's t quantiles (scipy.stats.t.ppf) to compare with.
T_TABLE = {(0.975, 1): 12.706204736174694, (0.975, 2): 4.302652729749462, (0.975, 3): 3.1824463052837078,
           (0.975, 4): 2.7764451051977934, (0.975, 9): 2.262157162798205, (0.975, 30): 2.0422724563012378,
           (0.975, 100): 1.9839715185235518, (0.95, 2): 2.9199855803537242, (0.95, 10): 1.8124611228116756}


@pytest.mark.parametrize("p, df", sorted(T_TABLE))
def test_t_quantile_matches_the_table(p, df):
    assert t_quantile(p, df) == pytest.approx(T_TABLE[p, df], rel=1e-12)


def test_t_quantile_refuses_what_it_cannot_compute():
    for p, df in ((0.4, 3), (1.0, 3), (0.975, 0), (0.975, 2.5)):
        with pytest.raises(ValueError):
            t_quantile(p, df)


def test_intervals_of_three_seeds_are_known_exactly():
    # t: mean 2, sd 1, se 1/sqrt(3); bootstrap: each extreme resample has probability 1/27 > 2.5 %, so
    # the 95 % percentile interval is [min, max]
    low, high = t_interval([1.0, 2.0, 3.0])
    assert (low, high) == pytest.approx((2 - 4.302652729749462 / math.sqrt(3), 2 + 4.302652729749462 / math.sqrt(3)))
    assert bootstrap_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    # (0, 0, 3): a resample's mean is the number k ~ Binomial(3, 1/3) of 3s drawn, P(k <= 0, 1, 2, 3)
    # = 8/27, 20/27, 26/27, 1: the 10 % and 90 % quantiles are 0 and 2
    assert bootstrap_interval([0.0, 0.0, 3.0], level=0.8) == (0.0, 2.0)
    # (0, 3, 3): k ~ Binomial(3, 2/3), P(k <= 0, 1, 2) = 1/27, 7/27, 19/27: the 25 % and 75 % quantiles are 1 and 3
    assert bootstrap_interval([0.0, 3.0, 3.0], level=0.5) == (1.0, 3.0)


def test_verdicts_of_a_clear_win_a_clear_loss_and_noise():
    win = compare_paired([0.011, 0.012, 0.010])
    assert win.verdict == REPRODUCES and win.mean == pytest.approx(0.011) and win.t_interval[0] > 0
    loss = compare_paired([-0.02, -0.03, -0.025, -0.022])
    assert loss.verdict == REVERSES and loss.t_interval[1] < 0 and loss.bootstrap_interval[1] < 0
    noise = compare_paired([-0.01, 0.0, 0.012])
    assert noise.verdict == UNCLEAR and noise.bootstrap_interval == pytest.approx((-0.01, 0.012))
    # all three seeds on one side, yet the t interval holds 0: the bootstrap rule says "reproduces"
    spread = [0.001, 0.002, 0.05]
    assert compare_paired(spread).verdict == UNCLEAR
    assert compare_paired(spread, rule="bootstrap").verdict == REPRODUCES
    assert compare_paired([0.01]).verdict == UNCLEAR  # one pair: no interval
    assert compare_paired([]).verdict == NO_DATA and compare_paired([]).mean is None
    assert compare_paired([0.0, 0.0, 0.0]).verdict == UNCLEAR  # a zero-width interval at 0


def test_the_bootstrap_is_deterministic_for_a_seed():
    d = np.linspace(-1, 3, 20)  # 20 pairs: Monte Carlo
    assert bootstrap_interval(d, seed=5) == bootstrap_interval(d, seed=5)
    assert bootstrap_interval(d, seed=5) != bootstrap_interval(d, seed=6)
    low, high = bootstrap_interval(d, seed=5)
    assert low < d.mean() < high
    # the exact enumeration (up to EXACT_BOOTSTRAP_MAX pairs) does not depend on the seed at all
    small = [0.3, -0.1, 0.2, 0.5, 0.0]
    assert bootstrap_interval(small, seed=1) == bootstrap_interval(small, seed=2)


def test_coverage_on_synthetic_normal_data():
    """Fixed seeds, so the counts are fixed: the t interval covers the true mean at its level, the
    percentile bootstrap of 3 values at 0.75 (the chance that 3 draws straddle the mean)."""
    rng = np.random.default_rng(20261201)
    draws = rng.normal(loc=0.3, scale=1.0, size=(2000, 3))
    t_hits = sum(lo <= 0.3 <= hi for lo, hi in map(t_interval, draws))
    boot_hits = sum(lo <= 0.3 <= hi for lo, hi in map(bootstrap_interval, draws))
    assert 0.94 <= t_hits / 2000 <= 0.96
    assert 0.73 <= boot_hits / 2000 <= 0.77


def test_pairs_are_the_seeds_both_sides_have():
    a = {"0": 0.9, "1": 0.8, "2": 0.85}
    b = {"1": 0.7, "2": 0.9, "3": 0.1}
    assert paired_differences(a, b) == pytest.approx((0.1, -0.05))


def test_bad_rules_and_levels_are_refused():
    with pytest.raises(ValueError):
        compare_paired([1, 2], rule="z")
    with pytest.raises(ValueError):
        compare_paired([1, 2], level=1.5)
    assert stats.RULES == ("t", "bootstrap")
