"""The DistBelief family (Dean et al., NIPS 2012) on the sharded parameter server of
:mod:`crossover_sgd.algorithms.ps`:

* :mod:`~crossover_sgd.algorithms.distbelief.downpour` — Downpour SGD (asynchronous replicas;
  shards apply SGD or Adagrad as pushes arrive: :mod:`~crossover_sgd.algorithms.distbelief.async_shard`)
* :mod:`~crossover_sgd.algorithms.distbelief.sandblaster` — Sandblaster L-BFGS (replicas computing
  portions; :mod:`~crossover_sgd.algorithms.distbelief.coordinator`,
  :mod:`~crossover_sgd.algorithms.distbelief.sandblaster_shard`)
* :mod:`~crossover_sgd.algorithms.distbelief.lbfgs` — L-BFGS over vectors held elsewhere (Sandblaster's)
"""

from crossover_sgd.algorithms.distbelief.downpour import Downpour, DownpourOptions
from crossover_sgd.algorithms.distbelief.sandblaster import Sandblaster, SandblasterOptions

__all__ = ["Downpour", "DownpourOptions", "Sandblaster", "SandblasterOptions"]
