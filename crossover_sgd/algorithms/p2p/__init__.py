"""The peer-to-peer consensus family: nodes of a graph, each with its own (possibly non-IID)
data, exchanging with their neighbours only (see :mod:`~crossover_sgd.algorithms.p2p.base`).

* :mod:`~crossover_sgd.algorithms.p2p.dsgd` — D-SGD
* :mod:`~crossover_sgd.algorithms.p2p.gossip_sgd` — Gossip SGD (pairwise averaging)
* :mod:`~crossover_sgd.algorithms.p2p.pdmm_sgd` — PDMM-SGD, ADMM-SGD (KDD 2020)
* :mod:`~crossover_sgd.algorithms.p2p.isvr` — PDMM-ISVR, ADMM-ISVR (ICML 2021)
* :mod:`~crossover_sgd.algorithms.p2p.cadmm` — decentralized consensus ADMM
* :mod:`~crossover_sgd.algorithms.p2p.primal_dual` — the per-edge duals the PDMM/ADMM methods share
"""

from crossover_sgd.algorithms.p2p.base import P2PAlgorithm, P2POptions
from crossover_sgd.algorithms.p2p.cadmm import CADMM
from crossover_sgd.algorithms.p2p.dsgd import DSGD
from crossover_sgd.algorithms.p2p.gossip_sgd import GossipSGD
from crossover_sgd.algorithms.p2p.isvr import AdmmISVR, PdmmISVR
from crossover_sgd.algorithms.p2p.pdmm_sgd import AdmmSGD, PdmmSGD

__all__ = ["P2PAlgorithm", "P2POptions", "DSGD", "GossipSGD", "PdmmSGD", "AdmmSGD", "PdmmISVR", "AdmmISVR", "CADMM"]
