"""The DistBelief family's figures (one figure each for all the runs drawn, colours by the run's
place as in the other figures):

* ``staleness.png`` (Downpour runs): the histogram of the staleness of the updates the shards
  applied (``ps/shard{s}.json``, summed over the shards: updates applied between the fetch a
  gradient was computed on and its application), one bar group per run with its mean staleness in
  the legend; and the updates applied per replica (``ps/shard{s}.csv``, a row per update), with
  each replica's mean staleness above its bar and the lost replicas hatched;
* ``lbfgs.png`` (Sandblaster runs): per L-BFGS iteration (``ps/coordinator.csv``) the loss against
  the iteration and against the coordinator's wall time, the step length, and the portions handed
  out and the backups among them;
* ``portions.png`` (Sandblaster runs): the portions each replica computed first (counted in the
  batch's gradient) and, stacked, the results of its that were discarded as duplicates
  (``ps/coordinator.json``); lost replicas hatched, replicas slowed on purpose named (``slow xF``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from crossover_sgd.plotting.data import RunMetrics
from crossover_sgd.plotting.figure import finite, pyplot, save_figure

__all__ = ["plot_staleness", "plot_lbfgs", "plot_portions", "mean_staleness", "LBFGS_PANELS"]

#: Hatching of a lost replica's bars.
LOST_HATCH = "//"


def mean_staleness(histogram: Dict[int, int]) -> float:
    """The mean of a staleness histogram (staleness -> updates); NaN for an empty one."""
    total = sum(histogram.values())
    return sum(s * n for s, n in histogram.items()) / total if total else math.nan


def _offsets(count: int, width: float = 0.8) -> Tuple[float, List[float]]:
    """The width of one bar and the offset of each of ``count`` bars in a group."""
    bar = width / max(count, 1)
    return bar, [(j - (count - 1) / 2) * bar for j in range(count)]


def _replicas_of(run: RunMetrics, counted: Dict[int, int]) -> List[int]:
    """The replicas to show for ``run``: those counted, those lost and those with a worker CSV."""
    ranks = set(counted) | set(run.lost_replicas)
    for worker in run.workers:
        suffix = worker[len("worker_rank"):]
        if suffix.isdigit():
            ranks.add(int(suffix))
    return sorted(ranks)


def _mark_lost(ax, bars, replicas: List[int], lost: List[int], say: bool = True) -> None:
    """Hatch the bars of lost replicas (``say``: and write ``lost`` above them)."""
    for bar, replica in zip(bars, replicas):
        if replica in lost:
            bar.set_hatch(LOST_HATCH)
            bar.set_edgecolor("black")
            if say:
                ax.annotate("lost", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 9), ha="center", fontsize=7, color="black")


def _headroom(ax, share: float = 0.25) -> None:
    """Room above the bars for the legend and the notes on them."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top + share * (top - bottom))


def _lost_handle():
    from matplotlib.patches import Patch

    return Patch(facecolor="0.85", edgecolor="black", hatch=LOST_HATCH, label="lost replica (dropped during the run)")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.35")


def plot_staleness(runs: Sequence[RunMetrics], path: Path, dpi: int = 120) -> Path:
    """The Downpour runs of ``runs`` (those with staleness records): the staleness histogram of
    their applied updates (summed over the shards), one bar group per run, and the updates
    applied per replica; written to ``path``."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    drawn = [(index, run) for index, run in enumerate(runs) if run.downpour]
    fig, (hist_ax, replica_ax) = plt.subplots(1, 2, figsize=(11.5, 4.6))
    width, offsets = _offsets(len(drawn))
    replica_ranks = sorted({r for _, run in drawn for r in _replicas_of(run, run.updates_by_replica())})
    position = {r: i for i, r in enumerate(replica_ranks)}
    any_lost = False
    for (index, run), offset in zip(drawn, offsets):
        color = f"C{index % 10}"
        histogram = run.staleness_total()
        total, mean = sum(histogram.values()), mean_staleness(histogram)
        shards = len(run.staleness)
        on = f" on {shards} shards" if shards > 1 else ""
        hist_ax.bar([s + offset for s in histogram], list(histogram.values()), width=width, color=color,
                    edgecolor="white", lw=0.4, label=f"{run.label}: {total} updates{on}, mean staleness {mean:.2f}")
        if math.isfinite(mean):
            hist_ax.axvline(mean, color=color, ls="--", lw=1.0)
        counted = run.updates_by_replica()
        replicas = _replicas_of(run, counted)
        bars = replica_ax.bar([position[r] + offset for r in replicas], [counted.get(r, 0) for r in replicas],
                              width=width, color=color, edgecolor="white", lw=0.4, label=run.label)
        stale = run.staleness_by_replica()
        for bar, replica in zip(bars, replicas):
            if replica in stale:  # the replica's mean staleness, above its bar
                replica_ax.annotate(f"{stale[replica]:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                    textcoords="offset points", xytext=(0, 1.5), ha="center", fontsize=6,
                                    color="0.25")
        _mark_lost(replica_ax, bars, replicas, run.lost_replicas)
        any_lost = any_lost or any(r in run.lost_replicas for r in replicas)
    hist_ax.set_title("Staleness of the applied updates (ps/shard*.json, summed over shards; dashed: the mean)",
                      fontsize=9)
    hist_ax.set_xlabel("staleness (updates the shard applied between the fetch and this update)", fontsize=8)
    hist_ax.set_ylabel("updates applied (count)", fontsize=8)
    hist_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    replica_ax.set_title("Updates applied per replica (ps/shard*.csv; above a bar: its mean staleness)", fontsize=9)
    replica_ax.set_xlabel("replica (rank)", fontsize=8)
    replica_ax.set_ylabel("updates applied (count, summed over shards)", fontsize=8)
    replica_ax.set_xticks(range(len(replica_ranks)))
    replica_ax.set_xticklabels([str(r) for r in replica_ranks])
    for ax in (hist_ax, replica_ax):
        ax.grid(True, axis="y", alpha=0.3)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if not any(bar.get_height() for container in ax.containers for bar in container):
            _empty(ax, "no updates in the shards' records")
        else:
            _headroom(ax)
    if hist_ax.containers:
        hist_ax.legend(fontsize=7, loc="best")
    if replica_ax.containers:
        handles, _ = replica_ax.get_legend_handles_labels()
        replica_ax.legend(handles=handles + ([_lost_handle()] if any_lost else []), fontsize=7, loc="best")
    fig.suptitle("Downpour SGD: staleness of the updates and the updates of each replica", fontsize=10)
    return save_figure(fig, path, dpi)


#: The panels of ``lbfgs.png``: (title, x column of ps/coordinator.csv, x label, [(y column, line
#: style, legend)], y label, log y).
LBFGS_PANELS: Tuple[Tuple[str, str, str, Tuple[Tuple[str, str, str], ...], str, bool], ...] = (
    ("Loss per L-BFGS iteration", "iteration", "L-BFGS iteration (over all epochs)",
     (("loss", "-", "loss"),), "batch loss (cross-entropy, nats)", True),
    ("Loss against the coordinator's wall time", "elapsed_s", "wall time since the coordinator started (s)",
     (("loss", "-", "loss"),), "batch loss (cross-entropy, nats)", True),
    ("Step length of the line search", "iteration", "L-BFGS iteration (over all epochs)",
     (("t", "-", "t"),), "step length t (multiple of the direction)", False),
    ("Portions handed out per iteration (solid) and backups among them (dashed)", "iteration",
     "L-BFGS iteration (over all epochs)", (("portions", "-", "portions computed"),
                                            ("backups", "--", "backups (copies of a running portion)")),
     "portions (count)", False),
)


def plot_lbfgs(runs: Sequence[RunMetrics], path: Path, dpi: int = 120) -> Path:
    """The Sandblaster runs of ``runs``: per L-BFGS iteration (``ps/coordinator.csv``) the loss
    against the iteration and against wall time, the step length, the portions and backups; one
    line per run; written to ``path``."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(11.5, 7.6))
    handles = []
    drawn = [(index, run) for index, run in enumerate(runs) if run.sandblaster]
    for index, run in drawn:
        color = f"C{index % 10}"
        final = run.coordinator_final
        about = []
        if math.isfinite(final.get("batch", math.nan)) and math.isfinite(final.get("portions", math.nan)):
            about.append(f"batch {final['batch']:.0f} samples in {final['portions']:.0f} portions")
        if math.isfinite(final.get("backups", math.nan)):
            about.append(f"{final['backups']:.0f} backups")
        handles.append(Line2D([], [], color=color, marker="o", ms=2.5, lw=1.3,
                              label=run.label + (f": {', '.join(about)}" if about else "")))
        for ax, (_, x_column, _, lines, _, _) in zip(axes.flat, LBFGS_PANELS):
            for column, style, _ in lines:
                xs, ys = finite(run.coordinator.get(x_column, []), run.coordinator.get(column, []))
                if xs:
                    ax.plot(xs, ys, color=color, ls=style, marker="o", ms=2.5, lw=1.3,
                            drawstyle="steps-mid" if column in ("portions", "backups") else "default")
    for ax, (title, x_column, xlabel, lines, ylabel, log_y) in zip(axes.flat, LBFGS_PANELS):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        if x_column == "iteration":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        values = [y for line in ax.lines for y in line.get_ydata()]
        if not values:
            _empty(ax, f"no {' or '.join(c for c, _, _ in lines)} values in ps/coordinator.csv")
        elif log_y and min(values) > 0:
            ax.set_yscale("log")
        elif not log_y and x_column == "iteration" and lines[0][0] == "t" and min(values) > 0 \
                and max(values) / min(values) > 20:
            ax.set_yscale("log")
        if len(lines) > 1 and values:
            ax.legend(handles=[Line2D([], [], color="0.3", ls=style, label=text) for _, style, text in lines],
                      fontsize=7, loc="best")
    if handles:  # above the loss, which falls from the top left: room made for it on the log scale
        loss_ax = axes.flat[0]
        low, high = loss_ax.get_ylim()
        if loss_ax.get_yscale() == "log" and 0 < low < high:
            loss_ax.set_ylim(low, high * (high / low) ** (0.12 * len(handles) + 0.1))
        loss_ax.legend(handles=handles, fontsize=7, loc="upper right")
    fig.suptitle("Sandblaster L-BFGS: per iteration (ps/coordinator.csv)", fontsize=10)
    return save_figure(fig, path, dpi)


def plot_portions(runs: Sequence[RunMetrics], path: Path, dpi: int = 120) -> Path:
    """The Sandblaster runs of ``runs``: per replica (``ps/coordinator.json``) the portions whose
    result it delivered first (counted in the gradient; solid) and, stacked, its results discarded
    as duplicates (light); one bar group per replica, a bar per run; lost replicas hatched,
    replicas slowed on purpose named; written to ``path``."""
    plt = pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    drawn = [(index, run) for index, run in enumerate(runs) if run.sandblaster]
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    width, offsets = _offsets(len(drawn))
    replica_ranks = sorted({r for _, run in drawn for r in _replicas_of(run, run.coordinator_final.get(
        "portions_by_replica", {}))})
    position = {r: i for i, r in enumerate(replica_ranks)}
    any_lost = any_discarded = False
    for (index, run), offset in zip(drawn, offsets):
        color = f"C{index % 10}"
        final = run.coordinator_final
        counted: Dict[int, int] = final.get("portions_by_replica", {})
        results: Dict[int, int] = final.get("results_by_replica", {})
        slow: Dict[int, float] = final.get("slow_replicas", {})
        replicas = _replicas_of(run, counted)
        xs = [position[r] + offset for r in replicas]
        heights = [counted.get(r, 0) for r in replicas]
        parts = [f"{sum(heights)} portions"]
        for key, noun in (("backups", "backups"), ("duplicates", "duplicates discarded")):
            if math.isfinite(final.get(key, math.nan)):
                parts.append(f"{final[key]:.0f} {noun}")
        bars = ax.bar(xs, heights, width=width, color=color, edgecolor="white", lw=0.4,
                      label=f"{run.label}: {', '.join(parts)}")
        discarded = [max(results.get(r, 0) - counted.get(r, 0), 0) for r in replicas]
        if any(discarded):
            any_discarded = True
            ax.bar(xs, discarded, width=width, bottom=heights, color=color, alpha=0.35, edgecolor=color, lw=0.4,
                   label=f"_discarded: {run.label}")
        for x, replica, height, extra in zip(xs, replicas, heights, discarded):  # above the stack
            notes = ([f"slow x{slow[replica]:g}"] if replica in slow else []) + \
                (["lost"] if replica in run.lost_replicas else [])
            if notes:
                ax.annotate(", ".join(notes), (x, height + extra), textcoords="offset points", xytext=(0, 2),
                            ha="center", fontsize=7, color="black")
        _mark_lost(ax, bars, replicas, run.lost_replicas, say=False)
        any_lost = any_lost or any(r in run.lost_replicas for r in replicas)
    ax.set_title("Portions per replica: counted in the gradient (solid) and discarded duplicates (light, stacked)",
                 fontsize=9)
    ax.set_xlabel("replica (rank)", fontsize=8)
    ax.set_ylabel("portions (count, over the whole run)", fontsize=8)
    ax.set_xticks(range(len(replica_ranks)))
    ax.set_xticklabels([str(r) for r in replica_ranks])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, axis="y", alpha=0.3)
    if not any(bar.get_height() for container in ax.containers for bar in container):
        _empty(ax, "no portions in ps/coordinator.json")
    else:
        _headroom(ax)
    if ax.containers:
        handles, _ = ax.get_legend_handles_labels()
        if any_discarded:
            handles.append(Patch(facecolor="0.6", alpha=0.35, label="results discarded (a backup's or the "
                                                                    "original's, whichever came second)"))
        if any_lost:
            handles.append(_lost_handle())
        ax.legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle("Sandblaster L-BFGS: who computed the batch (ps/coordinator.json)", fontsize=10)
    return save_figure(fig, path, dpi)
