"""Paired comparisons over seeds (pure numpy): is method A ahead of method B, behind it, or can it not be told?

The runs of two methods with the same seed form a pair; what is compared is the per-seed difference
``d_s = a_s - b_s`` (or any per-seed contrast, e.g. a difference of two drops). For the mean of
``d`` this module gives two intervals:

* the **paired t interval** ``mean ± t_{(1+level)/2, k-1} * sd / sqrt(k)`` (k pairs; exact coverage
  when the differences are normal; the t quantile is computed here, no scipy);
* the **percentile bootstrap interval** of the mean: *exact* for k <= :data:`EXACT_BOOTSTRAP_MAX`
  (the whole bootstrap distribution, every multiset of k draws with its multinomial weight: no
  Monte Carlo noise), else from ``resamples`` draws of a numpy generator seeded with ``seed``
  (deterministic). Quantiles are the lower inverse of the distribution function.

With few seeds the bootstrap is crude: for k = 3 the 95 % percentile interval is exactly
``[min d, max d]`` (each extreme resample has probability 1/27 > 2.5 %), which covers the true mean
with probability 0.75 only (continuous symmetric noise), not 0.95. The t interval is wide at k = 3
(t = 4.30) but keeps its level. Hence the default rule: the **verdict** is read from the t interval;
the bootstrap interval is reported beside it (``rule="bootstrap"`` reads the verdict from it instead).

Verdict of a claim ``A > B`` (the study's side is ``d > 0``): ``reproduces`` when the interval lies
entirely above 0, ``reverses`` when entirely below 0, ``cannot be told`` when it contains 0 (or
with fewer than 2 pairs), ``no data`` without a pair.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = ["REPRODUCES", "REVERSES", "UNCLEAR", "NO_DATA", "RULES", "EXACT_BOOTSTRAP_MAX", "Comparison",
           "t_quantile", "t_interval", "bootstrap_interval", "verdict", "compare_paired", "paired_differences"]

REPRODUCES, REVERSES, UNCLEAR, NO_DATA = "reproduces", "reverses", "cannot be told", "no data"
#: Which interval decides the verdict.
RULES = ("t", "bootstrap")
#: Up to this many pairs the bootstrap distribution is enumerated exactly (C(2k-1, k) multisets: 6435 at 8).
EXACT_BOOTSTRAP_MAX = 8

Interval = Tuple[float, float]


def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` degrees of freedom (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...)), df-3 in the last power
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= (2 * k) / (2 * k + 1) * c2
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0  # even: sin (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...), df-2 in the last power
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` >= 1 (integer) degrees of freedom."""
    if not 0.5 < p < 1 or df < 1 or int(df) != df:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and an integer df >= 1, not p={p}, df={df}")
    target, low, high = 2 * p - 1, 0.0, 1.0
    while _t_abs_cdf(high, int(df)) < target:
        low, high = high, 2 * high
    for _ in range(200):  # bisection to float precision
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        low, high = (middle, high) if _t_abs_cdf(middle, int(df)) < target else (low, middle)
    return high


def t_interval(diffs: Sequence[float], level: float = 0.95) -> Interval:
    """The paired t interval of the mean of ``diffs`` (infinite with fewer than 2 values)."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return (-math.inf, math.inf)
    half = t_quantile((1 + level) / 2, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    mean = float(d.mean())
    return (mean - half, mean + half)


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative weight reaches ``q`` of the total (lower inverse CDF)."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    index = int(np.searchsorted(cumulative, q - 1e-12, side="left"))
    return float(values[order][min(index, values.size - 1)])


def bootstrap_interval(diffs: Sequence[float], level: float = 0.95, resamples: int = 20000,
                       seed: int = 0) -> Interval:
    """The percentile bootstrap interval of the mean of ``diffs``: exact (every resample, weighted)
    for up to :data:`EXACT_BOOTSTRAP_MAX` values, else ``resamples`` draws seeded with ``seed``."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return (math.nan, math.nan)
    k = d.size
    if k <= EXACT_BOOTSTRAP_MAX:
        means, weights = [], []
        for combo in itertools.combinations_with_replacement(range(k), k):
            counts = np.bincount(combo, minlength=k)
            # multinomial probability of drawing these counts: k! / prod(c!) / k^k
            weights.append(math.factorial(k) / math.prod(math.factorial(c) for c in counts) / k ** k)
            means.append(float(counts @ d) / k)
        values, weight = np.array(means), np.array(weights)
    else:
        rng = np.random.default_rng(seed)
        values = d[rng.integers(0, k, size=(resamples, k))].mean(axis=1)
        weight = np.ones(resamples)
    alpha = 1 - level
    return (_weighted_quantile(values, weight, alpha / 2), _weighted_quantile(values, weight, 1 - alpha / 2))


def verdict(interval: Interval, count: int) -> str:
    """``reproduces`` (interval above 0), ``reverses`` (below 0), ``cannot be told``, ``no data``."""
    if count == 0:
        return NO_DATA
    low, high = interval
    if count >= 2 and low > 0:
        return REPRODUCES
    if count >= 2 and high < 0:
        return REVERSES
    return UNCLEAR


@dataclass(frozen=True)
class Comparison:
    """A paired comparison: the per-seed differences, their mean, both intervals and the verdict."""

    diffs: Tuple[float, ...]
    mean: Optional[float]
    t_interval: Interval
    bootstrap_interval: Interval
    level: float
    rule: str
    verdict: str

    def as_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data.update(diffs=list(self.diffs), t_interval=list(self.t_interval),
                    bootstrap_interval=list(self.bootstrap_interval), pairs=len(self.diffs))
        return data


def compare_paired(diffs: Sequence[float], level: float = 0.95, rule: str = "t", seed: int = 0) -> Comparison:
    """The comparison of a claim whose per-seed differences are ``diffs`` (> 0: the claim's side)."""
    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {', '.join(RULES)}")
    if not 0 < level < 1:
        raise ValueError(f"level {level} is not in (0, 1)")
    d = tuple(float(v) for v in diffs)
    t_int, boot_int = t_interval(d, level), bootstrap_interval(d, level, seed=seed)
    decided = t_int if rule == "t" else boot_int
    return Comparison(diffs=d, mean=sum(d) / len(d) if d else None, t_interval=t_int, bootstrap_interval=boot_int,
                      level=level, rule=rule, verdict=verdict(decided, len(d)))


def paired_differences(a: Dict[Any, float], b: Dict[Any, float]) -> Tuple[float, ...]:
    """``a[s] - b[s]`` for every seed ``s`` both have (in sorted seed order)."""
    return tuple(a[s] - b[s] for s in sorted(set(a) & set(b)))
