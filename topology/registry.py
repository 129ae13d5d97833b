"""Build any schedule of this package from its name (used by the CLI).

Names: ``crossover`` (+ ``fair``/``segmented`` ablations), ``hierarchical``
(``local_size`` or ``groupnum``), ``exponential`` (``k``, ``bidirectional``),
``exponential-all`` (all power-of-two peers every round), ``sgp-npeer`` (``k``),
``bipartite-exponential`` (``k``), ``ring``.
"""

from __future__ import annotations

from typing import Sequence, Union

from .crossover import CrossoverSchedule
from .exponential import (
    BipartiteExponentialGraph,
    ExponentialGraph,
    NPeerExponentialGraph,
    RingGraph,
    RotatingGraph,
)
from .hierarchy import HierarchicalSchedule

__all__ = ["SCHEDULES", "Schedule", "make_schedule"]

SCHEDULES = (
    "crossover",
    "hierarchical",
    "exponential",
    "exponential-all",
    "sgp-npeer",
    "bipartite-exponential",
    "ring",
)

Schedule = Union[CrossoverSchedule, HierarchicalSchedule, RotatingGraph]


def make_schedule(
    name: str,
    n: int,
    *,
    segments: int = 1,
    seed: int = 0,
    fair: bool = True,
    segmented: bool = True,
    k: int | None = None,
    bidirectional: bool = False,
    local_size: int | None = None,
    groupnum: int | None = None,
    segment_bytes: Sequence[int] | None = None,
) -> Schedule:
    """Construct schedule ``name``; raises ``ValueError`` naming any bad value."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: choose from {', '.join(SCHEDULES)}")
    if n < 1:
        raise ValueError(f"n={n} is invalid: the number of ranks must be >= 1")
    if segments < 1:
        raise ValueError(f"segments={segments} is invalid: the number of segments must be >= 1")
    if name in ("crossover", "hierarchical", "exponential-all", "ring") and k is not None:
        raise ValueError(f"k={k} does not apply to {name} (only exponential, sgp-npeer, bipartite-exponential)")
    if bidirectional and name != "exponential":
        raise ValueError("bidirectional only applies to the exponential schedule")
    if name == "hierarchical":
        if local_size is None and groupnum is None:
            raise ValueError("hierarchical needs local_size (ranks per node) or groupnum (number of nodes)")
        if local_size is not None and groupnum is not None:
            raise ValueError("give only one of local_size and groupnum")
        return HierarchicalSchedule(
            n, segments, seed, local_size=local_size, groupnum=groupnum,
            fair=fair, segmented=segmented, segment_bytes=segment_bytes,
        )
    if local_size is not None or groupnum is not None or segment_bytes is not None:
        raise ValueError("local_size, groupnum and segment_bytes only apply to the hierarchical schedule")
    if name == "crossover":
        return CrossoverSchedule(n, segments, seed, fair=fair, segmented=segmented)
    if segments != 1:
        raise ValueError(f"segments={segments} is invalid for {name}: gossip graphs mix whole models (use 1)")
    if not (fair and segmented):
        raise ValueError(f"the fair/segmented ablations only apply to crossover and hierarchical, not {name}")
    k = 1 if k is None else k
    if name == "exponential":
        return ExponentialGraph(n, k, bidirectional=bidirectional)
    if name == "exponential-all":
        return ExponentialGraph.all_peers(n)
    if name == "sgp-npeer":
        return NPeerExponentialGraph(n, k)
    if name == "bipartite-exponential":
        return BipartiteExponentialGraph(n, k)
    return RingGraph(n)
