"""``crossover-sgd plot RUN_DIR... [--out DIR]``: training curves of one or several runs as PNGs.

One figure per quantity (training loss, validation loss, accuracy of the replicas and of the
averaged model against the epoch and against wall time, consensus distance, learning rate), one
line per run labelled by its directory name (with as many parent folders as it takes to tell runs
apart) and algorithm: the mean over ranks, with a band from the lowest to the highest rank. Read
from each run's ``metrics_rank{R}.csv`` (and ``config.json`` for the label).

A run whose nodes hold their own data (the peer-to-peer family, or ``--partition`` other than
``shard``) also has per-node CSVs, ``nodes/<node>.csv``: for such a run one more figure,
``nodes.png`` (``nodes_<run>.png`` when several runs are drawn), shows per node, one line each,
the test accuracy (the shared validation set), the validation accuracy (the node's own held-out
data), the training loss and the live neighbours over the epochs, with a marker wherever a node's
live neighbours fell (a neighbour lost or done) and the count of neighbours dropped.

A run of the parameter-server family (``--algorithm localsgd|osp|losp|dqlosp``) or of Downpour has
``ps/``: ``server.png`` draws the server model's test accuracy and loss (``ps/shard0.csv``, a star
at the end from ``ps/shard0.json``) against wall time and against global iterations, one line per
run (the algorithms side by side); ``workers.png`` (``workers_<run>.png`` when several runs are
drawn) shows per worker (``ps/worker_rank{r}.csv``), one line each, the k of every push and its
latency (push to reply: communication) against the time the worker spent blocked waiting for it
(Downpour: the time training against the time blocked in fetches).

The DistBelief family (one figure for all the runs of the kind drawn): ``staleness.png`` for
Downpour runs, the histogram of the staleness of the applied updates (``ps/shard{s}.json``, summed
over shards), one bar group per run with its mean staleness, and the updates applied per replica
(``ps/shard{s}.csv``), lost replicas hatched; ``lbfgs.png`` for Sandblaster runs, per L-BFGS
iteration (``ps/coordinator.csv``) the loss against the iteration and the coordinator's wall time,
the step length, the portions and backups; ``portions.png``, the portions per replica
(``ps/coordinator.json``: counted, and discarded duplicates stacked), lost replicas hatched and
replicas slowed on purpose named.

Matplotlib is an optional extra (``pip install 'crossover-sgd[plot]'``) and is imported only when
a figure is drawn; a missing matplotlib, a directory without metrics or an unreadable CSV or JSON
record is one clear error line naming it. Also used by :mod:`crossover_sgd.experiments` for its
figures.

Modules: :mod:`~crossover_sgd.plotting.data` (reading a run), :mod:`~crossover_sgd.plotting.figure`
(matplotlib, the atomic PNG write), :mod:`~crossover_sgd.plotting.curves` (the per-quantity figures
and :func:`plot_runs`), :mod:`~crossover_sgd.plotting.nodes`, :mod:`~crossover_sgd.plotting.server`,
:mod:`~crossover_sgd.plotting.distbelief` (the figures above), :mod:`~crossover_sgd.plotting.cli`
(the command line).
"""

from __future__ import annotations

from crossover_sgd.plotting.cli import DESCRIPTION, add_subparser, configure, main, run
from crossover_sgd.plotting.curves import QUANTITIES, Quantity, plot_runs
from crossover_sgd.plotting.data import RunMetrics, distinct_names, load_run
from crossover_sgd.plotting.distbelief import plot_lbfgs, plot_portions, plot_staleness
from crossover_sgd.plotting.figure import PLOT_EXTRA_HINT, pyplot, save_figure
from crossover_sgd.plotting.nodes import NODE_PANELS, neighbour_losses, plot_nodes
from crossover_sgd.plotting.server import SERVER_PANELS, plot_server, plot_workers

__all__ = ["RunMetrics", "Quantity", "QUANTITIES", "NODE_PANELS", "SERVER_PANELS", "load_run", "plot_runs",
           "plot_nodes", "plot_server", "plot_workers", "plot_staleness", "plot_lbfgs", "plot_portions",
           "neighbour_losses", "distinct_names", "pyplot", "save_figure", "PLOT_EXTRA_HINT", "DESCRIPTION",
           "add_subparser", "configure", "run", "main"]
