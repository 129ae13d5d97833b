"""The gossip family: replicas that differ between steps and are mixed with peers after each step.

* :mod:`.base` — what the family shares: segments in flat buffers, wire dtype, finite check,
  posting a round and mixing it (:class:`GossipAlgorithm`, :class:`GossipOptions`);
* :mod:`.segments` — a model cut into segments ("chromosomes");
* :mod:`.sgp` — SGP / overlap SGP (push-sum on exponential graphs);
* :mod:`.crossover` — Crossover-SGD and its ablations;
* :mod:`.hierarchical` — hierarchical Crossover-SGD: an intra-node stage, then crossover between nodes.
"""

from crossover_sgd.algorithms.gossip.base import GossipAlgorithm, GossipOptions, OverlapOptions, SegmentRound
from crossover_sgd.algorithms.gossip.crossover import CrossoverOptions, CrossoverSGD, SegmentOptions
from crossover_sgd.algorithms.gossip.hierarchical import HierarchicalCrossoverSGD, HierarchicalOptions
from crossover_sgd.algorithms.gossip.sgp import SGP, SGPOptions

__all__ = ["GossipAlgorithm", "GossipOptions", "OverlapOptions", "SegmentRound", "SegmentOptions",
           "CrossoverOptions", "CrossoverSGD", "HierarchicalCrossoverSGD", "HierarchicalOptions", "SGP",
           "SGPOptions"]
