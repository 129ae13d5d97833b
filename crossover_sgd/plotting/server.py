"""The parameter-server figures: ``server.png``, the server model's test accuracy and loss
(``ps/shard0.csv``, a star at the end from ``ps/shard0.json``) against wall time and against
global iterations, one line per run (the algorithms side by side, Downpour among them); and
``workers.png``, per worker (``ps/worker_rank{r}.csv``), one line each, the k of every push and
the time it cost (push latency against the time blocked waiting for it; for Downpour, whose pushes
never block, the time blocked in fetches against the time training)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

from crossover_sgd.plotting.data import RunMetrics
from crossover_sgd.plotting.figure import finite, positive_data, pyplot, save_figure

__all__ = ["SERVER_PANELS", "evaluates", "plot_server", "plot_workers"]


#: The server figure: rows (column of ps/shard0.csv, y label, percent, log y) by columns (x column, x label).
SERVER_PANELS: Tuple[Tuple[Tuple[str, str, bool, bool], ...], Tuple[Tuple[str, str], ...]] = (
    (("test_acc", "server model: top-1 test accuracy (%)", True, False),
     ("test_loss", "server model: test loss (cross-entropy, nats)", False, True)),
    (("elapsed_s", "wall time since the server started (s)"),
     ("global_iterations", "global iterations (sum of the workers' local steps)")),
)
#: Where shard 0's summary (``ps/shard0.json``) has each x column of the server figure.
_FINAL_KEYS = {"elapsed_s": "wall_time_s", "global_iterations": "global_iterations"}


def evaluates(run: RunMetrics) -> bool:
    """Whether ``run``'s shard 0 evaluated the server model (``ps/shard0.csv`` has rows and a
    ``test_acc`` column: the parameter-server family and Downpour, not Sandblaster's shards)."""
    return bool(run.server.get("round")) and "test_acc" in run.server


def plot_server(runs: Sequence[RunMetrics], path: Path, dpi: int = 120) -> Path:
    """The server model's test accuracy and loss (``ps/shard0.csv``, evaluated on shard 0) against
    wall time and against global iterations: one line per run whose server evaluates
    (:func:`evaluates`), a star at the end (``ps/shard0.json``); written to ``path``."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    rows, columns = SERVER_PANELS
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(11.5, 7.6))
    handles: Dict[str, Any] = {}
    for ax_row, (column, ylabel, percent, log_y) in zip(axes, rows):
        scale = 100.0 if percent else 1.0
        for ax, (x_column, xlabel) in zip(ax_row, columns):
            for index, run in enumerate(runs):  # colours as in the other figures: by the run's place
                if not evaluates(run):
                    continue
                color = f"C{index % 10}"
                xs, ys = finite(run.server.get(x_column, []), run.server.get(column, []), scale)
                if xs:
                    ax.plot(xs, ys, color=color, marker="o", ms=2.5, lw=1.4)
                end_x, end_y = finite([run.server_final.get(_FINAL_KEYS[x_column], math.nan)],
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
            elif log_y and positive_data(ax):
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
    communication, solid) against the time the worker was blocked waiting for it (dashed); for
    Downpour's replicas (no latency: a push never blocks) the time spent training (solid)
    against the time blocked in fetches (dashed), both summed since the start; written to ``path``."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, (k_ax, time_ax) = plt.subplots(1, 2, figsize=(11.5, 4.6), sharex=True)
    handles = []
    # (column, line style, legend): a push's latency and wait; Downpour: training and fetches so far
    pushing = any("latency_s" in columns for columns in run.workers.values()) or \
        not any("fetch_wait_s" in columns for columns in run.workers.values())
    times = ((("latency_s", "-", "latency_s: push to reply"), ("wait_s", "--", "wait_s: blocked waiting for the reply"))
             if pushing else (("train_s", "-", "train_s: training (and pushing) so far"),
                              ("fetch_wait_s", "--", "fetch_wait_s: blocked in fetches so far")))
    for index, (worker, columns) in enumerate(run.workers.items()):
        color, label = f"C{index % 10}", worker.replace("worker_rank", "worker rank ")
        pushes, ks, finals = columns.get("push", []), columns.get("k", []), columns.get("final", [])
        xs, ys = finite(pushes, ks)
        if not xs:
            continue
        handles.append(Line2D([], [], color=color, marker="o", ms=2.5, lw=1.3, label=label))
        k_ax.plot(xs, ys, color=color, marker="o", ms=2.5, lw=1.3, drawstyle="steps-mid")
        final = [(x, k) for x, k, f in zip(pushes, ks, finals) if f == 1]
        k_ax.plot(*finite([x for x, _ in final], [k for _, k in final]), ls="none", marker="s", ms=6, mfc="none",
                  mec=color)
        for column, style, _ in times:
            time_ax.plot(*finite(pushes, columns.get(column, [])), color=color, ls=style, marker="o", ms=2, lw=1.2)
    k_ax.set_title("Local steps k of each push (square: the final push of a segment)", fontsize=9)
    k_ax.set_ylabel("k (local steps in the push)", fontsize=8)
    k_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ks = [k for line in k_ax.lines for k in line.get_ydata()]
    if ks and min(ks) == max(ks):  # every push of the same k (Downpour's --n-push): a readable axis
        k_ax.set_ylim(min(ks) - 1, max(ks) + 1)
    if pushing:
        time_ax.set_title("Communication (latency, solid) against waiting (wait, dashed)", fontsize=9)
        time_ax.set_ylabel("seconds per push", fontsize=8)
    else:
        time_ax.set_title("Training (solid) against blocked in fetches (dashed), since the start", fontsize=9)
        time_ax.set_ylabel("seconds (cumulative)", fontsize=8)
    for ax in (k_ax, time_ax):
        ax.set_xlabel("push")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="both", alpha=0.3)
        if not any(len(line.get_xdata()) for line in ax.lines):
            ax.text(0.5, 0.5, "no pushes in ps/worker_rank*.csv", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="0.35")
    if handles:
        k_ax.legend(handles=handles, fontsize=7, loc="best", ncol=max(1, math.ceil(len(handles) / 10)))
        time_ax.legend(handles=[Line2D([], [], color="0.3", ls=style, label=text) for _, style, text in times],
                       fontsize=7, loc="best")
    count = len(run.workers)
    fig.suptitle(f"{run.label}: per worker ({count} worker{'s' if count != 1 else ''}, ps/worker_rank*.csv)",
                 fontsize=10)
    return save_figure(fig, path, dpi)
