"""``crossover-sgd plot RUN_DIR... [--out DIR] [--dpi N]`` (also ``python -m crossover_sgd.plotting``):
the arguments, and the command that draws the figures of :func:`~crossover_sgd.plotting.curves.plot_runs`
and prints where they are."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence

from crossover_sgd.errors import ConfigError
from crossover_sgd.plotting.curves import plot_runs

__all__ = ["DESCRIPTION", "configure", "add_subparser", "run", "main"]

DESCRIPTION = ("Draw the training curves of one or several runs (their --out directories) into PNG files: "
               "one figure per quantity, against the epoch (and the accuracy against wall time), one line per run "
               "(mean over ranks, band: lowest to highest rank); for a run with per-node CSVs (nodes/*.csv) also one "
               "figure of its nodes, one line per node; for parameter-server and Downpour runs (ps/) the server "
               "model's accuracy against time and iterations, one line per run, and per run one figure of its "
               "workers' pushes; for Downpour runs the staleness of the updates (staleness.png), for Sandblaster "
               "runs the L-BFGS iterations (lbfgs.png) and the portions per replica (portions.png).")


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
