"""``crossover-sgd plot RUN_DIR... [--out DIR]``: training curves of one or several runs as PNGs.

One figure per quantity (training loss, validation loss, accuracy of the replicas and of the
averaged model, consensus distance, learning rate) against the epoch, one line per run labelled
by its directory name (with as many parent folders as it takes to tell runs apart) and algorithm:
the mean over ranks, with a band from the lowest to the highest rank. Read from each run's
``metrics_rank{R}.csv`` (and ``config.json`` for the label).

A run whose nodes hold their own data (the peer-to-peer family, or ``--partition`` other than
``shard``) also has per-node CSVs, ``nodes/<node>.csv``: for such a run one more figure,
``nodes.png`` (``nodes_<run>.png`` when several runs are drawn), shows per node, one line each,
the test accuracy (the shared validation set), the validation accuracy (the node's own held-out
data), the training loss and the live neighbours over the epochs, with a marker wherever a node's
live neighbours fell (a neighbour lost or done) and the count of neighbours dropped.

A run of the parameter-server family (``--algorithm localsgd|osp|losp|dqlosp``) has ``ps/``:
``server.png`` draws the server model's test accuracy and loss (``ps/shard0.csv``, a star at the
end from ``ps/shard0.json``) against wall time and against global iterations, one line per run
(the algorithms side by side); ``workers.png`` (``workers_<run>.png`` when several runs are drawn)
shows per worker (``ps/worker_rank{r}.csv``), one line each, the k of every push and its latency
(push to reply: communication) against the time the worker spent blocked waiting for it.

Matplotlib is an optional extra (``pip install 'crossover-sgd[plot]'``) and is imported only when
a figure is drawn; a missing matplotlib, a directory without metrics or an unreadable CSV is one clear error line.
Also used by :mod:`crossover_sgd.experiments` for its figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from crossover_sgd.errors import ConfigError

__all__ = ["RunMetrics", "Quantity", "QUANTITIES", "NODE_PANELS", "SERVER_PANELS", "load_run", "plot_runs",
           "plot_nodes", "plot_server", "plot_workers", "neighbour_losses", "distinct_names", "pyplot",
           "add_subparser", "configure", "run", "main"]

log = logging.getLogger(__name__)

PLOT_EXTRA_HINT = "pip install 'crossover-sgd[plot]' (or pip install matplotlib)"
DESCRIPTION = ("Draw the training curves of one or several runs (their --out directories) into PNG files: "
               "one figure per quantity, one line per run (mean over ranks, band: lowest to highest rank); "
               "for a run with per-node CSVs (nodes/*.csv) also one figure of its nodes, one line per node; "
               "for parameter-server runs (ps/) the server model's accuracy against time and iterations, "
               "one line per run, and per run one figure of its workers' pushes.")


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a ConfigError saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"plots need matplotlib, which is not installed: {PLOT_EXTRA_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a PNG atomically (no half-written file), close it."""
    from crossover_sgd.atomic import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi))
    pyplot().close(fig)
    return Path(path)


# ------------------------------------------------------------------------------------------ data
@dataclass
class RunMetrics:
    """The metrics of one run directory: per rank, a column name -> values per evaluation."""

    path: Path
    algorithm: str
    world_size: int
    ranks: List[Dict[str, List[float]]] = field(default_factory=list)
    name: str = ""  # how the run is called in legends (default: its directory name)
    #: Per node (``nodes/<node>.csv``, in node order): a column name -> values per evaluation.
    nodes: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    #: The parameter-server family: shard 0's rows (``ps/shard0.csv``), its summary at the end
    #: (``ps/shard0.json``) and per worker (``ps/worker_rank{r}.csv``, in rank order) its pushes.
    server: Dict[str, List[float]] = field(default_factory=dict)
    server_final: Dict[str, float] = field(default_factory=dict)
    workers: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        count, noun = (len(self.workers), "worker") if self.workers else (self.world_size, "rank")
        ranks = f"{count} {noun}{'s' if count != 1 else ''}"
        return f"{self.name or self.path.name} ({self.algorithm}, {ranks})"

    def epochs(self) -> List[float]:
        return self.ranks[0]["epoch"][: self.length()]

    def length(self) -> int:
        """Evaluations every rank has written (a run still in progress may differ by one)."""
        return min(len(r["epoch"]) for r in self.ranks)

    def has(self, column: str) -> bool:
        return all(column in r for r in self.ranks)

    def band(self, column: str) -> Tuple[List[float], List[float], List[float]]:
        """Per evaluation: (mean, min, max) of ``column`` over ranks."""
        n = self.length()
        per_eval = [[r[column][i] for r in self.ranks] for i in range(n)]
        return ([sum(v) / len(v) for v in per_eval], [min(v) for v in per_eval], [max(v) for v in per_eval])


def _read_csv(path: Path, required: str = "") -> Dict[str, List[float]]:
    """A metrics CSV as columns (a value that is not a number: NaN); a ConfigError naming the
    file if it cannot be read as a CSV, or lacks the column ``required`` (an empty file: no rows)."""
    columns: Dict[str, List[float]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if required and reader.fieldnames is not None and required not in reader.fieldnames:
                raise ConfigError(f"{path} is not a metrics CSV: it has no {required!r} column")
            for row in reader:
                for key, value in row.items():
                    if key is None:  # more cells than the header names
                        continue
                    try:
                        columns.setdefault(key, []).append(float(value))
                    except (TypeError, ValueError):
                        columns.setdefault(key, []).append(float("nan"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise ConfigError(f"{path} cannot be read as a CSV: {reason}") from None
    return columns


def _node_key(path: Path) -> Tuple[Any, ...]:
    """Natural order of node names (node2 before node10)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem))


def load_run(path: Path) -> RunMetrics:
    """Read a run directory's metrics; a ConfigError if it is missing or holds none."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory (expected a run's --out directory)")
    files = sorted(path.glob("metrics_rank*.csv"), key=lambda p: int(p.stem[len("metrics_rank"):] or 0))
    ranks = [_read_csv(f) for f in files if f.is_file()]
    ranks = [r for r in ranks if r.get("epoch")]
    node_files = sorted((f for f in (path / "nodes").glob("*.csv") if f.is_file()), key=_node_key)
    nodes = {f.stem: _read_csv(f, required="epoch") for f in node_files}
    shard0 = path / "ps" / "shard0.csv"
    server = _read_csv(shard0, required="round") if shard0.is_file() else {}
    worker_files = sorted((f for f in (path / "ps").glob("worker_rank*.csv") if f.is_file()), key=_node_key)
    workers = {f.stem: _read_csv(f, required="push") for f in worker_files}
    if not ranks and not any(n.get("epoch") for n in nodes.values()) and not server.get("round") \
            and not any(w.get("push") for w in workers.values()):
        raise ConfigError(f"{path} holds no metrics (no metrics_rank*.csv or nodes/*.csv with an evaluation, "
                          "no ps/*.csv with a row): not a run directory, or the run has not finished its first "
                          "epoch")
    algorithm, world = "?", len(ranks) or len(nodes)
    # a directory of nodes alone (copied from the nodes' machines): a node's summary has the config
    summaries = [Path("nodes") / f"{node}.json" for node in nodes]
    for name in ("config.json", "summary.json", *summaries):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        config = data.get("config", data)
        if not isinstance(config, dict):
            continue
        algorithm = str(config.get("algorithm", algorithm))
        world = int(data.get("world_size") or config.get("nproc") or world)
        break
    return RunMetrics(path, algorithm, world, ranks, nodes=nodes, server=server,
                      server_final=_server_final(path / "ps" / "shard0.json"), workers=workers)


def _server_final(path: Path) -> Dict[str, float]:
    """The numbers of shard 0's summary at the end (empty if it is missing or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    final = {}
    for key in ("wall_time_s", "global_iterations", "test_acc", "test_loss"):
        try:
            final[key] = float(data[key])
        except (KeyError, TypeError, ValueError):
            final[key] = math.nan
    return final


# ------------------------------------------------------------------------------------------ figures
@dataclass(frozen=True)
class Quantity:
    """One figure: its file name, title, y-axis label, the columns drawn and the y scale."""

    name: str
    title: str
    ylabel: str
    columns: Tuple[Tuple[str, str], ...]  # (metrics column, line style name)
    log_y: bool = False
    percent: bool = False


QUANTITIES: Tuple[Quantity, ...] = (
    Quantity("train_loss", "Training loss (mean over the epoch's steps)", "training loss (cross-entropy, nats)",
             (("train_loss", ""),), log_y=True),
    Quantity("val_loss", "Validation loss", "validation loss (cross-entropy, nats)", (("val_loss", ""),), log_y=True),
    Quantity("accuracy", "Validation accuracy: replicas (solid, band: min-max over ranks) and averaged model (dashed)",
             "top-1 validation accuracy (%)", (("val_acc", "replicas"), ("consensus_val_acc", "averaged model")),
             percent=True),
    Quantity("consensus_distance", "Consensus distance of the replicas",
             "(1/n) sum_i ||x_i - mean||^2 (squared parameter units)", (("consensus_distance", ""),), log_y=True),
    Quantity("lr", "Learning rate at the end of each epoch", "learning rate (SGD step size)", (("lr", ""),)),
)


def plot_runs(paths: Sequence[Path], out: Path, quantities: Sequence[Quantity] = QUANTITIES,
              dpi: int = 120) -> List[Path]:
    """Draw every quantity for the runs in ``paths`` into ``out/<quantity>.png``, and the nodes of
    each run with per-node CSVs into ``out/nodes.png`` (several runs: ``out/nodes_<run>.png``);
    for parameter-server runs the server's model of every one into ``out/server.png`` and the
    workers of each into ``out/workers.png`` (several runs: ``out/workers_<run>.png``); return
    the files."""
    runs = [load_run(Path(p)) for p in paths]
    for run, name in zip(runs, distinct_names([r.path for r in runs])):
        run.name = name
    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    ranked = [run for run in runs if run.ranks]  # (a directory may hold only its nodes' CSVs)
    for quantity in quantities if ranked else ():
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        notes: List[str] = []
        for index, run in enumerate(runs):
            if run.ranks:
                _draw_run(ax, run, quantity, f"C{index % 10}", notes)
        ax.set_title(quantity.title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity.ylabel, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            if quantity.log_y and _positive_data(ax):
                ax.set_yscale("log")
            ax.legend(fontsize=7, loc="best")
        if notes:
            ax.text(0.01, 0.01, "\n".join(notes), transform=ax.transAxes, fontsize=7, va="bottom", color="0.35")
        written.append(save_figure(fig, out / f"{quantity.name}.png", dpi))
    taken: set = set()
    for run in runs:
        if run.nodes:
            written.append(plot_nodes(run, out / _per_run_file("nodes", run, len(runs), taken), dpi))
    if any(run.server.get("round") for run in runs):
        written.append(plot_server(runs, out / "server.png", dpi))
    for run in runs:
        if run.workers:
            written.append(plot_workers(run, out / _per_run_file("workers", run, len(runs), taken), dpi))
    return written


def _per_run_file(prefix: str, run: RunMetrics, count: int, taken: set) -> str:
    """``<prefix>.png`` for the only run, ``<prefix>_<run>.png`` when ``count`` runs are drawn."""
    name = prefix if count == 1 else f"{prefix}_{_file_part(run.name or run.path.name)}"
    while name in taken:  # two names that differ only in characters a file name avoids
        name += "_"
    taken.add(name)
    return f"{name}.png"


#: The panels of the per-node figure: (column of nodes/<node>.csv, title, y label, percent, log y).
NODE_PANELS: Tuple[Tuple[str, str, str, bool, bool], ...] = (
    ("test_acc", "Test accuracy (the shared validation set)", "top-1 accuracy (%)", True, False),
    ("val_acc", "Validation accuracy (the node's own held-out data)", "top-1 accuracy (%)", True, False),
    ("train_loss", "Training loss (mean over the epoch's steps)", "training loss (nats)", False, True),
    ("live_neighbours", "Live neighbours (X: fewer than at the evaluation before)", "neighbours", False, False),
)


def neighbour_losses(columns: Dict[str, List[float]]) -> List[Tuple[int, int]]:
    """The evaluations (row index) at which a node had fewer live neighbours than at the one before,
    or more dropped neighbours (from 0 before the first), with the count of neighbours it dropped
    since the evaluation before (0: a neighbour that finished, not a loss)."""
    live = columns.get("live_neighbours", [])
    dropped = columns.get("dropped_neighbours", [])
    events = []
    last_live, last_dropped = math.nan, 0.0
    for i in range(len(columns.get("epoch", []))):
        now_live = live[i] if i < len(live) else math.nan
        now_dropped = dropped[i] if i < len(dropped) else math.nan
        fewer = math.isfinite(now_live) and math.isfinite(last_live) and now_live < last_live
        lost = int(now_dropped - last_dropped) if math.isfinite(now_dropped) and now_dropped > last_dropped else 0
        if fewer or lost:
            events.append((i, lost))
        if math.isfinite(now_live):
            last_live = now_live
        if math.isfinite(now_dropped):
            last_dropped = now_dropped
    return events


def plot_nodes(run: RunMetrics, path: Path, dpi: int = 120) -> Path:
    """One figure of ``run``'s per-node CSVs (:data:`NODE_PANELS`): one line per node, a marker
    where its live neighbours fell; written to ``path``."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(11.5, 7.6), sharex=True)
    count = len(run.nodes)
    never = [node for node, columns in run.nodes.items() if not columns.get("epoch")]
    events = 0
    for ax, (column, title, ylabel, percent, log_y) in zip(axes.flat, NODE_PANELS):
        scale = 100.0 if percent else 1.0
        neighbours = column == "live_neighbours"
        drawn = False
        for index, (node, columns) in enumerate(run.nodes.items()):
            epochs = columns.get("epoch", [])
            # the neighbour counts of several nodes are often equal: each node's line is shifted a little
            shift = 0.12 * (index - (count - 1) / 2) / max(1, count - 1) * 2 if neighbours and count > 1 else 0.0
            values = [v * scale + shift for v in columns.get(column, [])][: len(epochs)]
            if not any(math.isfinite(v) for v in values):
                continue
            drawn = True
            color = f"C{index % 10}"
            ax.plot(epochs[: len(values)], values, color=color, marker="o", ms=2.5, lw=1.3, label=node,
                    drawstyle="steps-post" if neighbours else "default")
            for i, lost in neighbour_losses(columns):
                if i < len(values) and math.isfinite(values[i]):
                    events += 1
                    ax.plot([epochs[i]], [values[i]], ls="none", marker="X", ms=9, mfc=color, mec="black", mew=0.8,
                            zorder=5)
                    if neighbours and lost:
                        ax.annotate(f"-{lost}", (epochs[i], values[i]), textcoords="offset points", xytext=(5, 3),
                                    fontsize=7, color="black")
        ax.set_title(title + ("; lines shifted apart" if neighbours and count > 1 else ""), fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        if neighbours:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if log_y and drawn and _positive_data(ax):
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, f"no {column} values in nodes/*.csv", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="0.35")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    handles = [Line2D([], [], color=f"C{i % 10}", marker="o", ms=2.5, lw=1.3, label=node)
               for i, node in enumerate(run.nodes) if node not in never]
    if events:
        handles.append(Line2D([], [], ls="none", marker="X", ms=9, mfc="0.7", mec="black", mew=0.8,
                              label="live neighbours fell: a neighbour lost (-k: k dropped) or done"))
    if handles:
        axes.flat[0].legend(handles=handles, fontsize=7, loc="best", ncol=max(1, math.ceil(len(handles) / 10)))
    if never:
        fig.text(0.01, 0.005, f"no evaluation written by: {', '.join(never)}", fontsize=7, color="0.35")
    fig.suptitle(f"{run.label}: per node ({count} node{'s' if count != 1 else ''}, nodes/*.csv)", fontsize=10)
    return save_figure(fig, path, dpi)


#: The server figure: rows (column of ps/shard0.csv, y label, percent, log y) by columns (x column, x label).
SERVER_PANELS: Tuple[Tuple[Tuple[str, str, bool, bool], ...], Tuple[Tuple[str, str], ...]] = (
    (("test_acc", "server model: top-1 test accuracy (%)", True, False),
     ("test_loss", "server model: test loss (cross-entropy, nats)", False, True)),
    (("elapsed_s", "wall time since the server started (s)"),
     ("global_iterations", "global iterations (sum of the workers' local steps)")),
)
#: Where shard 0's summary (``ps/shard0.json``) has each x column of the server figure.
_FINAL_KEYS = {"elapsed_s": "wall_time_s", "global_iterations": "global_iterations"}


def _finite(xs: Sequence[float], ys: Sequence[float], scale: float = 1.0) -> Tuple[List[float], List[float]]:
    """The points of ``(xs, ys * scale)`` where both are finite numbers."""
    pairs = [(x, y * scale) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    return [x for x, _ in pairs], [y for _, y in pairs]


def plot_server(runs: Sequence[RunMetrics], path: Path, dpi: int = 120) -> Path:
    """The server model's test accuracy and loss (``ps/shard0.csv``, evaluated on shard 0) against
    wall time and against global iterations: one line per run with a server, a star at the end
    (``ps/shard0.json``); written to ``path``."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    rows, columns = SERVER_PANELS
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(11.5, 7.6))
    handles: Dict[str, Any] = {}
    for ax_row, (column, ylabel, percent, log_y) in zip(axes, rows):
        scale = 100.0 if percent else 1.0
        for ax, (x_column, xlabel) in zip(ax_row, columns):
            for index, run in enumerate(runs):  # colours as in the other figures: by the run's place
                if not run.server.get("round"):
                    continue
                color = f"C{index % 10}"
                xs, ys = _finite(run.server.get(x_column, []), run.server.get(column, []), scale)
                if xs:
                    ax.plot(xs, ys, color=color, marker="o", ms=2.5, lw=1.4)
                end_x, end_y = _finite([run.server_final.get(_FINAL_KEYS[x_column], math.nan)],
                                       [run.server_final.get(column, math.nan)], scale)
                if end_x:
                    ax.plot(end_x, end_y, ls="none", marker="*", ms=10, color=color, mec="black", mew=0.6, zorder=5)
                if xs or end_x:
                    handles.setdefault(run.label, Line2D([], [], color=color, marker="o", ms=2.5, lw=1.4,
                                                         label=run.label))
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            if not ax.lines:
                ax.text(0.5, 0.5, f"no {column} values in ps/shard0.csv", transform=ax.transAxes, ha="center",
                        va="center", fontsize=8, color="0.35")
            elif log_y and _positive_data(ax):
                ax.set_yscale("log")
    legend = list(handles.values())
    if legend:
        legend.append(Line2D([], [], ls="none", marker="*", ms=10, color="0.7", mec="black", mew=0.6,
                             label="at the end (ps/shard0.json)"))
        axes.flat[0].legend(handles=legend, fontsize=7, loc="best")
    fig.suptitle("Parameter server: the server's model (shard 0 evaluates it every --ps-eval-every aggregations)",
                 fontsize=10)
    return save_figure(fig, path, dpi)


def plot_workers(run: RunMetrics, path: Path, dpi: int = 120) -> Path:
    """``run``'s workers (``ps/worker_rank{r}.csv``), one line each: the k of every push (a hollow
    square: a final push, at the end of a segment) and the push's latency (push to reply:
    communication, solid) against the time the worker was blocked waiting for it (dashed);
    written to ``path``."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, (k_ax, time_ax) = plt.subplots(1, 2, figsize=(11.5, 4.6), sharex=True)
    handles = []
    for index, (worker, columns) in enumerate(run.workers.items()):
        color, label = f"C{index % 10}", worker.replace("worker_rank", "worker rank ")
        pushes, ks, finals = columns.get("push", []), columns.get("k", []), columns.get("final", [])
        xs, ys = _finite(pushes, ks)
        if not xs:
            continue
        handles.append(Line2D([], [], color=color, marker="o", ms=2.5, lw=1.3, label=label))
        k_ax.plot(xs, ys, color=color, marker="o", ms=2.5, lw=1.3, drawstyle="steps-mid")
        final = [(x, k) for x, k, f in zip(pushes, ks, finals) if f == 1]
        k_ax.plot(*_finite([x for x, _ in final], [k for _, k in final]), ls="none", marker="s", ms=6, mfc="none",
                  mec=color)
        for column, style in (("latency_s", "-"), ("wait_s", "--")):
            time_ax.plot(*_finite(pushes, columns.get(column, [])), color=color, ls=style, marker="o", ms=2, lw=1.2)
    k_ax.set_title("Local steps k of each push (square: the final push of a segment)", fontsize=9)
    k_ax.set_ylabel("k (local steps in the push)", fontsize=8)
    k_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    time_ax.set_title("Communication (latency, solid) against waiting (wait, dashed)", fontsize=9)
    time_ax.set_ylabel("seconds per push", fontsize=8)
    for ax in (k_ax, time_ax):
        ax.set_xlabel("push")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="both", alpha=0.3)
        if not any(len(line.get_xdata()) for line in ax.lines):
            ax.text(0.5, 0.5, "no pushes in ps/worker_rank*.csv", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="0.35")
    if handles:
        k_ax.legend(handles=handles, fontsize=7, loc="best", ncol=max(1, math.ceil(len(handles) / 10)))
        time_ax.legend(handles=[Line2D([], [], color="0.3", ls="-", label="latency_s: push to reply"),
                                Line2D([], [], color="0.3", ls="--", label="wait_s: blocked waiting for the reply")],
                       fontsize=7, loc="best")
    count = len(run.workers)
    fig.suptitle(f"{run.label}: per worker ({count} worker{'s' if count != 1 else ''}, ps/worker_rank*.csv)",
                 fontsize=10)
    return save_figure(fig, path, dpi)


def _file_part(name: str) -> str:
    """``name`` with what a file name should not hold replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"


def distinct_names(paths: Sequence[Path]) -> List[str]:
    """The shortest trailing parts of each path that tell the paths apart (``a/run``, ``b/run``)."""
    resolved = [Path(p).resolve() for p in paths]
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in resolved]
        if len(set(names)) == len(names) or depth >= max(len(p.parts) for p in resolved) - 1:
            return names
        depth += 1


def _positive_data(ax) -> bool:
    return any(any(y > 0 for y in line.get_ydata()) for line in ax.lines)


def _draw_run(ax, run: RunMetrics, quantity: Quantity, color: str, notes: List[str]) -> None:
    epochs = run.epochs()
    scale = 100.0 if quantity.percent else 1.0
    for column, style in quantity.columns:
        if not run.has(column):
            notes.append(f"{run.path.name}: no {column} column")
            continue
        mean, low, high = (_scaled(v, scale) for v in run.band(column))
        if quantity.log_y and not any(v > 0 for v in mean):
            notes.append(f"{run.path.name}: {column} is 0 throughout (identical replicas)")
            continue
        dashed = style == "averaged model"
        label = run.label if not style else f"{run.label}: {style}"
        ax.plot(epochs, mean, color=color, ls="--" if dashed else "-", marker="o", ms=2.5, lw=1.4, label=label)
        if not dashed and run.length() and any(h > lo for h, lo in zip(high, low)):
            ax.fill_between(epochs, low, high, color=color, alpha=0.18, lw=0)


def _scaled(values: List[float], scale: float) -> List[float]:
    return [v * scale for v in values]


# ------------------------------------------------------------------------------------------ command line
def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``plot`` arguments to ``parser``."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output directories of training runs (--out)")
    parser.add_argument("--out", default=None,
                        help="where to write the PNGs (default: RUN_DIR/plots for one run, ./plots for several)")
    parser.add_argument("--dpi", type=int, default=120, help="resolution of the PNGs")
    return parser


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``plot`` on the ``crossover-sgd`` subcommands; ``args.handler`` is :func:`run`."""
    parser = subparsers.add_parser("plot", help="draw training curves of runs into PNG files",
                                   description=DESCRIPTION)
    configure(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Draw the figures; print where they are. Bad input raises ConfigError (one line, exit 2)."""
    paths = [Path(p) for p in args.runs]
    out = Path(args.out) if args.out else (paths[0] / "plots" if len(paths) == 1 else Path("plots"))
    if args.dpi < 20:
        raise ConfigError(f"--dpi {args.dpi} is too small: use 20 or more")
    from crossover_sgd.atomic import user_output

    # probed first (read-only, full, /proc, a file in the way); a failed write: one line naming
    # --out, and the figures and directories this call created are removed again
    with user_output("--out", out, clean_on=(OSError, ConfigError)):
        written = plot_runs(paths, out, dpi=args.dpi)
    for path in written:
        print(path)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m crossover_sgd.plotting RUN_DIR...``: the same as ``crossover-sgd plot``."""
    from crossover_sgd.console import OneLineParser, report_errors

    parser = configure(OneLineParser(prog="crossover-sgd plot", description=DESCRIPTION))
    args = parser.parse_args(argv)
    return report_errors(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
