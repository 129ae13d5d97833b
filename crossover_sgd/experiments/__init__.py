"""Experiments that produce the project's evidence: ``crossover-sgd experiment {scalability,mixing,noniid}``.

* :mod:`~crossover_sgd.experiments.scalability`: real training runs for every algorithm over
  world sizes, global batches and seeds; final accuracy of the averaged model and of the
  replicas, consensus distance over time; tables and plots.
* :mod:`~crossover_sgd.experiments.mixing`: consensus error and spectral gap of the topologies
  for 16 to 4096 simulated replicas (the ``topology`` package).
* :mod:`~crossover_sgd.experiments.noniid`: the peer-to-peer family on non-IID data against
  single-node training (8 nodes, several seeds; per-node accuracy, tables, plots).

:func:`add_subparser` registers the ``experiment`` subcommand on the ``crossover-sgd`` parser and
:func:`run` executes it. This module imports nothing heavy: the experiments load torch, numpy and
matplotlib only when they run.
"""

from crossover_sgd.experiments.cli import EXPERIMENTS, add_subparser, build_parser, main, run

__all__ = ["EXPERIMENTS", "add_subparser", "build_parser", "main", "run"]
