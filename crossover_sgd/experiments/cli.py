"""The ``experiment`` subcommand: ``crossover-sgd experiment {scalability,mixing} [flags]``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, Dict, Optional, Sequence

__all__ = ["EXPERIMENTS", "add_subparser", "build_parser", "run", "main"]

#: experiment name -> (module, one-line help)
EXPERIMENTS: Dict[str, tuple] = {
    "scalability": ("crossover_sgd.experiments.scalability",
                    "train every algorithm over world sizes, global batches and seeds; accuracy tables and plots"),
    "mixing": ("crossover_sgd.experiments.mixing",
               "consensus error and spectral gap of the topologies for 16 ... 4096 simulated replicas"),
    "noniid": ("crossover_sgd.experiments.noniid",
               "the peer-to-peer family on non-IID nodes against one node on all the data; per-node accuracy"),
}


DESCRIPTION = ("Experiments that produce the project's evidence: learning scalability (real training runs) "
               "and mixing at scale (simulated consensus).")


def _configure(name: str, parser: argparse.ArgumentParser) -> None:
    module = importlib.import_module(EXPERIMENTS[name][0])
    module.configure(parser)
    parser.add_argument("--log-level", default="INFO", help="progress messages: INFO (default), WARNING, ...")


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``experiment`` (with one sub-subcommand per experiment) on ``crossover-sgd``'s
    subcommands; the parsed ``args.handler`` is :func:`run`."""
    parser = subparsers.add_parser("experiment", help="run an experiment: " + ", ".join(EXPERIMENTS),
                                   description=DESCRIPTION)
    _add_experiments(parser)
    parser.set_defaults(handler=run)
    return parser


def _add_experiments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="{" + ",".join(EXPERIMENTS) + "}",
                                parser_class=type(parser))
    for name, (module, help_text) in EXPERIMENTS.items():
        _configure(name, sub.add_parser(name, help=help_text, description=help_text))


def build_parser(prog: str = "crossover-sgd experiment") -> argparse.ArgumentParser:
    """A stand-alone parser (``python -m crossover_sgd.experiments``)."""
    from crossover_sgd.console import OneLineParser

    parser = OneLineParser(prog=prog, description=DESCRIPTION)
    _add_experiments(parser)
    return parser


def _setup_logging(level: str) -> None:
    from crossover_sgd.errors import ConfigError

    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ConfigError(f"--log-level {level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
    logging.basicConfig(level=level.upper(), stream=sys.stderr, force=True,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run(args: argparse.Namespace) -> int:
    """Run the experiment ``args.experiment`` names; bad input raises ConfigError."""
    _setup_logging(args.log_level)
    module = importlib.import_module(EXPERIMENTS[args.experiment][0])
    return module.run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from crossover_sgd.console import report_errors

    args = build_parser().parse_args(argv)
    return report_errors(lambda: run(args))
