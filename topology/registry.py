"""Build any schedule of this package from its name (used by the CLI).

Names: ``crossover`` (+ ``fair``/``segmented`` ablations), ``hierarchical``
(``local_size`` or ``groupnum``), ``exponential`` (``k``, ``bidirectional``),
``exponential-all`` (all power-of-two peers every round), ``sgp-npeer`` (``k``),
``bipartite-exponential`` (``k``), ``ring``, ``graph`` (a static undirected graph:
``graph`` = one of :data:`topology.graph.GRAPH_KINDS`, with ``k`` the degree of
``regular`` / expected degree of ``erdos-renyi``, or ``edge_file``). Every schedule
implements :class:`topology.schedule.PeerSchedule`, which is what ``Schedule`` names.
"""

from __future__ import annotations

import os
from typing import Sequence

from .crossover import CrossoverSchedule
from .exponential import (
    BipartiteExponentialGraph,
    ExponentialGraph,
    NPeerExponentialGraph,
    RingGraph,
)
from .graph import GRAPH_KINDS, Graph, make_graph
from .hierarchy import HierarchicalSchedule
from .schedule import PeerSchedule

__all__ = ["SCHEDULES", "Schedule", "make_schedule"]

SCHEDULES = (
    "crossover",
    "hierarchical",
    "exponential",
    "exponential-all",
    "sgp-npeer",
    "bipartite-exponential",
    "ring",
    "graph",
)

#: Every schedule :func:`make_schedule` builds implements this protocol.
Schedule = PeerSchedule


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
    graph: str | None = None,
    edge_file: str | os.PathLike | None = None,
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
    if name != "graph" and (graph is not None or edge_file is not None):
        raise ValueError("graph and edge_file only apply to the graph schedule")
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
    if name == "graph":
        if (graph is None) == (edge_file is None):
            raise ValueError(
                f"the graph schedule needs exactly one of graph ({', '.join(GRAPH_KINDS)}) or edge_file"
            )
        if graph is None:
            if k is not None:
                raise ValueError(f"k={k} does not apply to a graph read from edge_file")
            return Graph.from_edge_file(edge_file, n=n)  # type: ignore[arg-type]
        return make_graph(graph, n, k=k, seed=seed)
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
