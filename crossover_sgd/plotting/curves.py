"""The per-quantity figures (training loss, validation loss, accuracy against the epoch and
against wall time, consensus distance, learning rate), one line per run: the mean over ranks of
``metrics_rank{R}.csv`` with a band from the lowest to the highest rank; and :func:`plot_runs`,
which draws them and every other figure the runs have records for."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from crossover_sgd.plotting.data import RunMetrics, distinct_names, load_run
from crossover_sgd.plotting.distbelief import plot_lbfgs, plot_portions, plot_staleness
from crossover_sgd.plotting.figure import per_run_file, positive_data, pyplot, save_figure
from crossover_sgd.plotting.nodes import plot_nodes
from crossover_sgd.plotting.server import evaluates, plot_server, plot_workers

__all__ = ["Quantity", "QUANTITIES", "plot_runs"]


@dataclass(frozen=True)
class Quantity:
    """One figure: its file name, title, y-axis label, the columns drawn, the y scale and the x
    column (``epoch``, or ``wall_time_s``: the mean over ranks of the wall time of training)."""

    name: str
    title: str
    ylabel: str
    columns: Tuple[Tuple[str, str], ...]  # (metrics column, line style name)
    log_y: bool = False
    percent: bool = False
    x: str = "epoch"
    xlabel: str = "epoch"


_ACCURACY = (("val_acc", "replicas"), ("consensus_val_acc", "averaged model"))
QUANTITIES: Tuple[Quantity, ...] = (
    Quantity("train_loss", "Training loss (mean over the epoch's steps)", "training loss (cross-entropy, nats)",
             (("train_loss", ""),), log_y=True),
    Quantity("val_loss", "Validation loss", "validation loss (cross-entropy, nats)", (("val_loss", ""),), log_y=True),
    Quantity("accuracy", "Validation accuracy: replicas (solid, band: min-max over ranks) and averaged model (dashed)",
             "top-1 validation accuracy (%)", _ACCURACY, percent=True),
    Quantity("accuracy_time", "Accuracy against wall time: replicas (solid, band: min-max over ranks), averaged "
             "model (dashed)", "top-1 validation accuracy (%)", _ACCURACY, percent=True, x="wall_time_s",
             xlabel="wall time of training at the evaluation (s, mean over ranks)"),
    Quantity("consensus_distance", "Consensus distance of the replicas",
             "(1/n) sum_i ||x_i - mean||^2 (squared parameter units)", (("consensus_distance", ""),), log_y=True),
    Quantity("lr", "Learning rate at the end of each epoch", "learning rate (SGD step size)", (("lr", ""),)),
)


def plot_runs(paths: Sequence[Path], out: Path, quantities: Sequence[Quantity] = QUANTITIES,
              dpi: int = 120) -> List[Path]:
    """Draw every quantity for the runs in ``paths`` into ``out/<quantity>.png``, and the nodes of
    each run with per-node CSVs into ``out/nodes.png`` (several runs: ``out/nodes_<run>.png``);
    for parameter-server runs the server's model of every one into ``out/server.png`` and the
    workers of each into ``out/workers.png`` (several runs: ``out/workers_<run>.png``); for
    Downpour runs the staleness of their updates into ``out/staleness.png``, for Sandblaster runs
    their L-BFGS iterations into ``out/lbfgs.png`` and their portions per replica into
    ``out/portions.png`` (one figure for all such runs); return the files."""
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
        ax.set_xlabel(quantity.xlabel)
        ax.set_ylabel(quantity.ylabel, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            if quantity.log_y and positive_data(ax):
                ax.set_yscale("log")
            ax.legend(fontsize=7, loc="best")
        if notes:
            ax.text(0.01, 0.01, "\n".join(notes), transform=ax.transAxes, fontsize=7, va="bottom", color="0.35")
        written.append(save_figure(fig, out / f"{quantity.name}.png", dpi))
    taken: set = set()
    for run in runs:
        if run.nodes:
            written.append(plot_nodes(run, out / _per_run_file("nodes", run, len(runs), taken), dpi))
    if any(evaluates(run) for run in runs):
        written.append(plot_server(runs, out / "server.png", dpi))
    for run in runs:
        if run.workers:
            written.append(plot_workers(run, out / _per_run_file("workers", run, len(runs), taken), dpi))
    if any(run.downpour for run in runs):
        written.append(plot_staleness(runs, out / "staleness.png", dpi))
    if any(run.sandblaster for run in runs):
        written.append(plot_lbfgs(runs, out / "lbfgs.png", dpi))
        written.append(plot_portions(runs, out / "portions.png", dpi))
    return written


def _per_run_file(prefix: str, run: RunMetrics, count: int, taken: set) -> str:
    """``<prefix>.png`` for the only run, ``<prefix>_<run>.png`` when ``count`` runs are drawn."""
    return per_run_file(prefix, run.name or run.path.name, count, taken)


def _draw_run(ax, run: RunMetrics, quantity: Quantity, color: str, notes: List[str]) -> None:
    if quantity.x == "epoch":
        xs = run.epochs()
    elif run.has(quantity.x):
        xs = run.band(quantity.x)[0]
    else:
        notes.append(f"{run.path.name}: no {quantity.x} column")
        return
    scale = 100.0 if quantity.percent else 1.0
    for column, style in quantity.columns:
        if not run.has(column):
            notes.append(f"{run.path.name}: no {column} column")
            continue
        mean, low, high = (_scaled(v, scale) for v in run.band(column))
        if quantity.x != "epoch":  # only the evaluations with a time
            keep = [i for i, x in enumerate(xs) if math.isfinite(x)]
            xs_, mean, low, high = ([v[i] for i in keep] for v in (xs, mean, low, high))
        else:
            xs_ = xs
        if quantity.log_y and not any(v > 0 for v in mean):
            notes.append(f"{run.path.name}: {column} is 0 throughout (identical replicas)")
            continue
        dashed = style == "averaged model"
        label = run.label if not style else f"{run.label}: {style}"
        ax.plot(xs_, mean, color=color, ls="--" if dashed else "-", marker="o", ms=2.5, lw=1.4, label=label)
        if not dashed and xs_ and any(h > lo for h, lo in zip(high, low)):
            ax.fill_between(xs_, low, high, color=color, alpha=0.18, lw=0)


def _scaled(values: List[float], scale: float) -> List[float]:
    return [v * scale for v in values]
