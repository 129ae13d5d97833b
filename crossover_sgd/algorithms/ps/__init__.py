"""The parameter-server family: workers train locally and synchronise through server shards
(see :mod:`~crossover_sgd.algorithms.ps.base`).

* :mod:`~crossover_sgd.algorithms.ps.localsgd` — localSGD
* :mod:`~crossover_sgd.algorithms.ps.osp` — OSP (overlapped communication)
* :mod:`~crossover_sgd.algorithms.ps.losp` — LOSP (OSP with local compensation)
* :mod:`~crossover_sgd.algorithms.ps.dqlosp` — DQLOSP (LOSP with quantized messages)
* :mod:`~crossover_sgd.algorithms.ps.family` — roles, server options, the worker's plumbing (shared with DistBelief)
* :mod:`~crossover_sgd.algorithms.ps.shard` — a server shard's rank; :mod:`~crossover_sgd.algorithms.ps.server` — its synchronous rounds
* :mod:`~crossover_sgd.algorithms.ps.protocol`, :mod:`~crossover_sgd.algorithms.ps.shards`,
  :mod:`~crossover_sgd.algorithms.ps.records` — the letters, the split by bytes, the CSVs
"""

from crossover_sgd.algorithms.ps.base import PSAlgorithm, PSOptions
from crossover_sgd.algorithms.ps.family import SERVER, ServerFamily, ServerOptions
from crossover_sgd.algorithms.ps.dqlosp import DQLOSP
from crossover_sgd.algorithms.ps.localsgd import LocalSGD
from crossover_sgd.algorithms.ps.losp import LOSP
from crossover_sgd.algorithms.ps.osp import OSP

__all__ = ["SERVER", "ServerFamily", "ServerOptions", "PSAlgorithm", "PSOptions", "LocalSGD", "OSP", "LOSP", "DQLOSP"]
