"""The per-node figure (``nodes.png``) of a run whose nodes hold their own data: per node
(``nodes/<node>.csv``), one line each, the test accuracy (the shared validation set), the
validation accuracy (the node's own held-out data), the training loss and the live neighbours
over the epochs, with a marker wherever a node's live neighbours fell (a neighbour lost or done)
and the count of neighbours dropped."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Tuple

from crossover_sgd.plotting.data import RunMetrics
from crossover_sgd.plotting.figure import positive_data, pyplot, save_figure

__all__ = ["NODE_PANELS", "neighbour_losses", "plot_nodes"]


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
        if log_y and drawn and positive_data(ax):
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
