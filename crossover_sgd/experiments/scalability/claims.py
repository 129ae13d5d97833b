"""The study's orderings (ResNet-50 on ImageNet, its result sheets: ``docs/scalability.md``) as paired comparisons.

Each claim is a per-seed contrast of final accuracies that the study found positive: a level
(``A > B`` in one cell: ``acc_A - acc_B``) or a drop (``A`` loses more than ``B`` from one end of a
sweep to the other: ``(acc_A(lo) - acc_A(hi)) - (acc_B(lo) - acc_B(hi))``). Runs with the same seed
pair up; :func:`crossover_sgd.experiments.stats.compare_paired` gives the intervals and the
verdict (reproduces / reverses / cannot be told).

Processes sweep (fixed global batch 86,016, 8 -> 64 processes in the study; here the smallest ->
largest world size, levels at the largest): AllReduce > Crossover > SGP, hierarchical > Crossover;
SGP and Crossover drop more than AllReduce, SGP more than Crossover, Crossover more than
hierarchical. Only with a fixed global batch (``--global-batch``): at a fixed per-rank batch the
global batch grows too, which is not the study's design.
Batch sweep (8 processes, 86K -> 160K in the study): AllReduce drops more than Crossover and SGP,
and ends below both. The ablations (Crossover ahead of no-fairness and no-segmentation, at the
largest world size) are the design's premise: the study publishes no table of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from crossover_sgd.experiments import stats
from crossover_sgd.experiments.scalability.plan import Design, Variant

__all__ = ["Claim", "study_claims", "evaluate"]

#: A term of a contrast: (sign, variant, world size, global batch).
Term = Tuple[int, str, int, int]

#: The study's names of the variants.
LABELS = {"allreduce": "AllReduce", "sgp": "SGP", "crossover": "Crossover", "crossover-no-fair": "Crossover no-fair",
          "crossover-no-seg": "Crossover no-seg"}


def label(variant: str) -> str:
    if variant.startswith("hierarchical-g"):
        return f"hierarchical ({variant[len('hierarchical-g'):]}/node)"
    return LABELS.get(variant, variant)


@dataclass(frozen=True)
class Claim:
    """A claim of the study: its name, the sweep, the study's numbers, the contrast's terms."""

    name: str
    sweep: str  # "processes" or "batch"
    study: str
    terms: Tuple[Term, ...]

    def contrast(self, seed_accs: Mapping[Tuple[str, int, int], Mapping[str, float]]) -> Tuple[float, ...]:
        """The per-seed contrast (in accuracy units) over the seeds every term has."""
        columns = [seed_accs.get(term[1:], {}) for term in self.terms]
        seeds = set.intersection(*(set(k for k, v in c.items() if v is not None) for c in columns))
        return tuple(sum(sign * column[s] for (sign, *_), column in zip(self.terms, columns))
                     for s in sorted(seeds, key=int))


def _level(a: str, b: str, n: int, batch: int, sweep: str, where: str, study: str) -> Claim:
    return Claim(f"{label(a)} > {label(b)} {where}", sweep, study, ((1, a, n, batch), (-1, b, n, batch)))


def _drop(a: str, b: str, lo: Tuple[int, int], hi: Tuple[int, int], sweep: str, where: str, study: str) -> Claim:
    terms = ((1, a, *lo), (-1, a, *hi), (-1, b, *lo), (1, b, *hi))
    return Claim(f"{label(a)} drops more than {label(b)} {where}", sweep, study, terms)


def _runnable(variants: Mapping[str, Variant], name: str, n: int) -> bool:
    return name in variants and variants[name].skip_reason(n) is None


def study_claims(design: Design, variants: Sequence[Variant]) -> List[Claim]:
    """The study's orderings that this design can test (its variants, its sweeps)."""
    by_name = {v.name: v for v in variants}
    hierarchical = [v.name for v in variants if v.name.startswith("hierarchical-g")]
    claims: List[Claim] = []
    if design.global_batch is not None and len(design.world_sizes) > 1:
        batch, sizes = design.global_batch, sorted(design.world_sizes)
        hi = sizes[-1]
        at = f"at {hi} processes"
        levels = [("allreduce", "crossover", "75.62 vs 74.06 at 64 processes"),
                  ("allreduce", "sgp", "75.62 vs 73.13 at 64"), ("crossover", "sgp", "74.06 vs 73.13 at 64")]
        levels += [(h, "crossover", "75.73 (8 groups) vs 74.06 at 64") for h in hierarchical]
        levels += [("crossover", ablation, "no published table: the design's premise")
                   for ablation in ("crossover-no-fair", "crossover-no-seg")]
        claims += [_level(a, b, hi, batch, "processes", at, study) for a, b, study in levels
                   if _runnable(by_name, a, hi) and _runnable(by_name, b, hi)]
        drops = [("sgp", "allreduce", "-2.22 vs -0.05 from 8 to 64 processes"),
                 ("crossover", "allreduce", "-1.67 vs -0.05 from 8 to 64"),
                 ("sgp", "crossover", "-2.22 vs -1.67 from 8 to 64")]
        drops += [("crossover", h, "-1.67 vs 0.00 (8 groups) from 8 to 64") for h in hierarchical]
        for a, b, study in drops:
            both = [n for n in sizes if _runnable(by_name, a, n) and _runnable(by_name, b, n)]
            if len(both) > 1 and both[-1] == hi:
                claims.append(_drop(a, b, (both[0], batch), (hi, batch), "processes",
                                    f"from {both[0]} to {hi} processes", study))
    if design.batch_world is not None and len(design.batch_sweep) > 1:
        by_name = {k: v for k, v in by_name.items() if design.batch_variants is None or k in design.batch_variants}
        n, batches = design.batch_world, sorted(design.batch_sweep)
        lo, hi_batch = batches[0], batches[-1]
        where = f"from a global batch of {lo} to {hi_batch} at {n} processes"
        for b, study in (("crossover", "-4.17 vs -3.45 from 86K to 160K at 8 processes"),
                         ("sgp", "-4.17 vs -3.10 from 86K to 160K")):
            if _runnable(by_name, "allreduce", n) and _runnable(by_name, b, n):
                claims.append(_drop("allreduce", b, (n, lo), (n, hi_batch), "batch", where, study))
        for a, study in (("crossover", "72.28 vs 71.50 at 160K"), ("sgp", "72.25 vs 71.50 at 160K")):
            if _runnable(by_name, "allreduce", n) and _runnable(by_name, a, n):
                claims.append(_level(a, "allreduce", n, hi_batch, "batch",
                                     f"at a global batch of {hi_batch}, {n} processes", study))
    return claims


def evaluate(claims: Sequence[Claim], chosen: Mapping[Tuple[str, int, int], Mapping[str, Any]],
             level: float = 0.95, rule: str = "t", seed: int = 0) -> List[Dict[str, Any]]:
    """Every claim's comparison over the chosen rows (by variant, world size, global batch),
    differences in accuracy units (0.01 = one point)."""
    seed_accs = {key: row.get("seed_accs", {}) for key, row in chosen.items()}
    results = []
    for claim in claims:
        comparison = stats.compare_paired(claim.contrast(seed_accs), level=level, rule=rule, seed=seed)
        results.append({"claim": claim.name, "sweep": claim.sweep, "study": claim.study,
                        "terms": [list(t) for t in claim.terms], **comparison.as_dict()})
    return results
