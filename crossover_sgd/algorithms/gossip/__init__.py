"""The gossip family: replicas that differ between steps and are mixed with peers after each step.

* :mod:`.base` — what the family shares: the round counter, cutting the model into segments
  (:class:`SegmentOptions`, :func:`segment_model`), segments in flat buffers, wire dtype, finite
  check, planning, posting and mixing a round (:class:`GossipAlgorithm`, :class:`GossipOptions`);
* :mod:`.segments` — a model cut into segments ("chromosomes");
* :mod:`.sgp` — SGP / overlap SGP (push-sum on exponential graphs);
* :mod:`.crossover` — Crossover-SGD and its ablations;
* :mod:`.hierarchical` — hierarchical Crossover-SGD: an intra-node stage (:class:`IntraNodeStage`),
  then crossover between nodes.
"""

from crossover_sgd.algorithms.gossip.base import (GossipAlgorithm, GossipOptions, OverlapOptions, SegmentOptions,
                                                  SegmentRound, segment_model)
from crossover_sgd.algorithms.gossip.crossover import CrossoverOptions, CrossoverSGD
from crossover_sgd.algorithms.gossip.hierarchical import HierarchicalCrossoverSGD, HierarchicalOptions, IntraNodeStage
from crossover_sgd.algorithms.gossip.sgp import SGP, SGPOptions

__all__ = ["GossipAlgorithm", "GossipOptions", "OverlapOptions", "SegmentRound", "SegmentOptions", "segment_model",
           "CrossoverOptions", "CrossoverSGD", "HierarchicalCrossoverSGD", "HierarchicalOptions", "IntraNodeStage",
           "SGP", "SGPOptions"]
