"""``crossover-sgd experiment scalability``: final accuracy as processes and global batch grow.

Real training runs through the command line (``python -m crossover_sgd train --nproc N ...
--out DIR``), one after another, for every algorithm variant, cell and seed (:mod:`.plan`):

* the **processes sweep** over ``--world-sizes``, at a fixed per-rank batch (``--batch-size``: the
  global batch grows with the processes) or at a fixed global batch (``--global-batch B``: per-rank
  batch ``B / n``, the study's design);
* the **batch sweep** at ``--batch-world`` processes (``--global-batches`` or per-rank
  ``--batch-sizes``);
* the **learning rate**: a rule of the global batch (``--lr-rule``) times each multiplier of
  ``--lr-grid``; every cell reports the grid point with the best mean final accuracy
  (:mod:`.results`); ``--lr-grid-world N`` runs the grid at N processes only and reuses its choice.

Variants: ``allreduce`` (AllReduce-SGD), ``sgp`` (1 peer), ``crossover`` (fine segments),
``hierarchical-gG`` (hierarchical crossover, ``--gpu_per_node G``), and the study's ablations
``crossover-no-fair`` (``--fair False``) and ``crossover-no-seg`` (``--segmented False``).
``--study`` sets the study's design (:data:`.command.PRESETS`), ``--quick`` a test-sized one.

Collected from each run's ``summary.json`` and metrics CSVs: the final accuracy of the averaged
model (``consensus_val_acc``), of every replica (mean and worst rank), the consensus distance per
epoch; aggregated over seeds. The study's orderings (:mod:`.claims`) are paired comparisons over
seeds with intervals and a verdict (:mod:`crossover_sgd.experiments.stats`).

Skip and resume: every run lives in ``OUT/runs/<variant>/n<N>-b<B>-lr<LR>-s<seed>/`` (``B``: the
per-rank batch). A re-run reuses a finished run (its ``summary.json``) when it was made by the same
command, continues an interrupted one from its checkpoint (``--resume``), and starts over one that
has none.

Outputs in ``OUT``: ``scalability.md`` (the tables, the comparisons, the lr grid),
``scalability.csv`` (one row per cell and lr), ``comparisons.csv``, ``runs.csv`` (one row per run),
``scalability.json`` (everything, with the consensus-distance series) and the plots
``scalability_acc_vs_procs.png``, ``scalability_consensus_distance.png`` and, with a batch sweep,
``scalability_acc_vs_batch.png``.
"""

from crossover_sgd.experiments.scalability.command import DEFAULTS, PRESETS, check, configure, run
from crossover_sgd.experiments.scalability.plan import (Cell, Design, RunSpec, Settings, Variant, make_variants,
                                                        plan_runs, select_variants)

__all__ = ["DEFAULTS", "PRESETS", "Cell", "Design", "RunSpec", "Settings", "Variant", "check", "configure",
           "make_variants", "plan_runs", "run", "select_variants"]
