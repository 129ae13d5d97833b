"""The DistBelief family (Dean et al., NIPS 2012) on the sharded parameter server of
:mod:`crossover_sgd.algorithms.ps`:

* :mod:`~crossover_sgd.algorithms.distbelief.downpour` — Downpour SGD (asynchronous replicas;
  shards apply SGD or Adagrad as pushes arrive: :mod:`~crossover_sgd.algorithms.distbelief.async_shard`)
* :mod:`~crossover_sgd.algorithms.distbelief.lbfgs` — L-BFGS over vectors held elsewhere (Sandblaster's)
"""

from crossover_sgd.algorithms.distbelief.downpour import Downpour, DownpourOptions

__all__ = ["Downpour", "DownpourOptions"]
