"""``crossover-sgd plot RUN_DIR... [--out DIR]``: training curves of one or several runs as PNGs.

One figure per quantity (training loss, validation loss, accuracy of the replicas and of the
averaged model, consensus distance, learning rate) against the epoch, one line per run labelled
by its directory name (with as many parent folders as it takes to tell runs apart) and algorithm:
the mean over ranks, with a band from the lowest to the highest rank. Read from each run's
``metrics_rank{R}.csv`` (and ``config.json`` for the label).

Matplotlib is an optional extra (``pip install 'crossover-sgd[plot]'``) and is imported only when
a figure is drawn; a missing matplotlib or a directory without metrics is one clear error line.
Also used by :mod:`crossover_sgd.experiments` for its figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from crossover_sgd.errors import ConfigError

__all__ = ["RunMetrics", "Quantity", "QUANTITIES", "load_run", "plot_runs", "distinct_names", "pyplot",
           "add_subparser", "configure", "run", "main"]

log = logging.getLogger(__name__)

PLOT_EXTRA_HINT = "pip install 'crossover-sgd[plot]' (or pip install matplotlib)"
DESCRIPTION = ("Draw the training curves of one or several runs (their --out directories) into PNG files: "
               "one figure per quantity, one line per run (mean over ranks, band: lowest to highest rank).")


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

    @property
    def label(self) -> str:
        ranks = f"{self.world_size} rank{'s' if self.world_size != 1 else ''}"
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


def _read_csv(path: Path) -> Dict[str, List[float]]:
    columns: Dict[str, List[float]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    columns.setdefault(key, []).append(float("nan"))
    return columns


def load_run(path: Path) -> RunMetrics:
    """Read a run directory's metrics; a ConfigError if it is missing or holds none."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory (expected a run's --out directory)")
    files = sorted(path.glob("metrics_rank*.csv"), key=lambda p: int(p.stem[len("metrics_rank"):] or 0))
    ranks = [_read_csv(f) for f in files]
    ranks = [r for r in ranks if r.get("epoch")]
    if not ranks:
        raise ConfigError(f"{path} holds no metrics (no metrics_rank*.csv with an evaluation): "
                          "not a run directory, or the run has not finished its first epoch")
    algorithm, world = "?", len(ranks)
    for name in ("config.json", "summary.json"):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        config = data.get("config", data)
        algorithm = str(config.get("algorithm", algorithm))
        world = int(data.get("world_size") or config.get("nproc") or world)
        break
    return RunMetrics(path, algorithm, world, ranks)


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
    """Draw every quantity for the runs in ``paths`` into ``out/<quantity>.png``; return the files."""
    runs = [load_run(Path(p)) for p in paths]
    for run, name in zip(runs, distinct_names([r.path for r in runs])):
        run.name = name
    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for quantity in quantities:
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        notes: List[str] = []
        for index, run in enumerate(runs):
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
    return written


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
