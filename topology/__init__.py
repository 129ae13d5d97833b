"""Gossip topologies for decentralized data-parallel training (pure NumPy, no torch).

* :mod:`topology.schedule` — :class:`PeerSchedule`, the protocol every schedule
  implements (``transfers(rank, round)``, ``mixing_matrices(round)``, ...), and
  :class:`Transfer`.
* :mod:`topology.derangement` — uniform random derangements keyed by
  ``SeedSequence([seed, round, segment])`` (identical on every rank, no communication).
* :mod:`topology.crossover` — Crossover-SGD's load-balanced random topology, one map
  per segment per round, and the "no fairness" / "no segmentation" ablations.
* :mod:`topology.exponential` — SGP's time-varying exponential graphs (k peers per
  round, all peers, SGP's N-peer and bipartite variants) and the ring.
* :mod:`topology.hierarchy` — ranks -> nodes, crossover between nodes, segments
  spread over local ranks ("use every GPU's link").
* :mod:`topology.graph` — static undirected graphs (neighbours, edge indices,
  Laplacian, Metropolis-Hastings weights; ring, torus, random regular, ...) for
  D-SGD and the per-edge methods.
* :mod:`topology.coloring` — proper edge colourings (at most max degree + 1 colours).
* :mod:`topology.nodes` — the peer-to-peer family's named nodes: ``node_list.json`` and
  ``hosts.json`` as the original code writes them (validated, one-line errors), or generated
  (slots from an edge colouring); per-step exchanges and the signs ``A_{i|j}``.
* :mod:`topology.mixing` — dense mixing matrices; orientation ``x_new = W @ x`` with
  the replicas' values stacked as rows.
* :mod:`topology.spectral` — spectral gap as a per-round mean-square contraction
  (closed form, Fourier, dense or Lanczos).
* :mod:`topology.registry` — build any schedule from its name.
* :mod:`topology.simulate` — consensus simulator on ``(N, d)`` arrays.
* ``python -m topology {peers,simulate,nodes}`` — command line (:mod:`topology.cli`).
"""

from .coloring import edge_colouring
from .crossover import CrossoverSchedule, PeerMap, crossover_mean_square_rate
from .derangement import (
    DERANGEMENT_METHOD,
    count_derangements,
    derangement,
    expected_attempts,
    key_bit_generator,
    other_ranks_map,
    sample_derangement,
    sample_other_ranks,
)
from .exponential import (
    BipartiteExponentialGraph,
    ExponentialGraph,
    NPeerExponentialGraph,
    RingGraph,
    RotatingGraph,
    num_powers_of_two_below,
)
from .graph import GRAPH_KINDS, Graph, make_graph
from .hierarchy import HierarchicalSchedule, InterNodeTransfer, NodeLayout, assign_segments_to_local_ranks
from .mixing import (
    apply_dense,
    crossover_matrix,
    gather_matrix,
    hierarchical_matrix,
    intra_node_matrix,
    is_column_stochastic,
    is_doubly_stochastic,
    is_row_stochastic,
    lift_node_matrix,
    push_sum_matrix,
    segment_slices,
)
from .nodes import (
    NodeGraph,
    NodeListError,
    generated_nodes,
    load_hosts,
    load_node_list,
    write_hosts,
    write_node_list,
)
from .registry import SCHEDULES, Schedule, make_schedule
from .schedule import PeerSchedule, Transfer, check_transfers, round_plan
from .simulate import SimulationResult, random_initial_values, simulate
from .spectral import GAP_METHODS, GapEstimate, lanczos_max_eigenvalue, mean_square_rate, spectral_gap

__all__ = [
    # the schedule protocol
    "PeerSchedule",
    "Transfer",
    "round_plan",
    "check_transfers",
    # derangement
    "DERANGEMENT_METHOD",
    "count_derangements",
    "derangement",
    "expected_attempts",
    "key_bit_generator",
    "other_ranks_map",
    "sample_derangement",
    "sample_other_ranks",
    # crossover
    "CrossoverSchedule",
    "PeerMap",
    "crossover_mean_square_rate",
    # SGP graphs
    "RotatingGraph",
    "ExponentialGraph",
    "NPeerExponentialGraph",
    "BipartiteExponentialGraph",
    "RingGraph",
    "num_powers_of_two_below",
    # hierarchy
    "NodeLayout",
    "InterNodeTransfer",
    "HierarchicalSchedule",
    "assign_segments_to_local_ranks",
    # static graphs
    "Graph",
    "GRAPH_KINDS",
    "make_graph",
    "edge_colouring",
    # peer-to-peer node graphs
    "NodeGraph",
    "NodeListError",
    "load_node_list",
    "load_hosts",
    "generated_nodes",
    "write_node_list",
    "write_hosts",
    # mixing matrices
    "segment_slices",
    "gather_matrix",
    "crossover_matrix",
    "push_sum_matrix",
    "intra_node_matrix",
    "lift_node_matrix",
    "hierarchical_matrix",
    "apply_dense",
    "is_row_stochastic",
    "is_column_stochastic",
    "is_doubly_stochastic",
    # registry, simulation, spectra
    "SCHEDULES",
    "Schedule",
    "make_schedule",
    "SimulationResult",
    "simulate",
    "random_initial_values",
    "GAP_METHODS",
    "GapEstimate",
    "mean_square_rate",
    "spectral_gap",
    "lanczos_max_eigenvalue",
]
