"""The ``crossover-sgd`` command line (also ``python -m crossover_sgd``).

Subcommands: ``train`` (a training run, optionally spawning ``--nproc`` local ranks, optionally on an
emulated cluster: ``--emulate-nodes M --link-rate RATE``), ``launch-info`` (what each rank detects
about its launch: a check of a cluster setup) and ``netcheck`` (the throughput of every node's link).
Bad input ends with one line ``crossover-sgd: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, Dict, List, Optional, Sequence

from crossover_sgd.algorithms.registry import ALGORITHMS
from crossover_sgd.config import TrainConfig
from crossover_sgd.console import OneLineParser, add_flag, report_errors
from crossover_sgd.errors import ConfigError
from crossover_sgd.flags import add_train_flags, config_from_args
from crossover_sgd.runtime.emulation import EmulationPlan, check_available, plan_emulation
from crossover_sgd.runtime.local_launcher import claim_error_channel

__all__ = ["main", "build_parser", "run_train"]

PROG = "crossover-sgd"
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Decentralized large-minibatch training: "
                           "AllReduce-SGD, SGP and Crossover-SGD behind one flag.")
    from crossover_sgd import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    train = sub.add_parser("train", help="train a model (locally with --nproc, or under srun/mpirun/torchrun)")
    add_train_flags(train)
    info = sub.add_parser("launch-info", help="print what every rank detects about its launch, then exit")
    info.add_argument("--gpu-per-node", "--gpu_per_node", type=int, default=None)
    info.add_argument("--backend", default="auto")
    info.add_argument("--device", default="auto")
    info.add_argument("--nproc", type=int, default=None)
    info.add_argument("--json", default=None, help="also write the gathered table to this JSON file")
    _add_emulation_flags(info)
    check = sub.add_parser("netcheck", help="measure the throughput of every node's link with torch send/recv "
                           "(on an emulated cluster: against the set rate)")
    check.add_argument("--nproc", type=int, default=None, help="start N local ranks (the local launcher)")
    _add_emulation_flags(check)
    check.add_argument("--mbytes", type=float, default=None,
                       help="megabytes per measured stream (default: 2 seconds at the set rate, or 256)")
    check.add_argument("--timeout", type=float, default=120.0, help="process-group timeout in seconds")
    check.add_argument("--json", default=None, help="also write the report to this JSON file")
    check.set_defaults(netcheck=True)
    from crossover_sgd import ecl, experiments, jsac, plotting

    experiments.add_subparser(sub)
    plotting.add_subparser(sub)
    ecl.add_subparser(sub, run_train)  # the original peer-to-peer code's command line
    jsac.add_subparser(sub, run_train)  # the original parameter-server code's command line
    return parser


def _add_emulation_flags(parser: argparse.ArgumentParser) -> None:
    """``--emulate-nodes`` and ``--link-rate`` of a subcommand other than ``train`` (its are in flags)."""
    add_flag(parser, "--emulate-nodes", type=int, default=None, metavar="M",
             help="with --nproc N: run the ranks on M emulated nodes (network namespaces, root only)")
    add_flag(parser, "--link-rate", default=None, metavar="RATE",
             help="with --emulate-nodes: the rate of every node's link, both ways (e.g. 200mbit, 1gbit)")


#: The spellings of the launcher's own flags, removed from the command every rank re-runs.
_LAUNCHER_FLAGS = ("--nproc", "--emulate-nodes", "--emulate_nodes", "--link-rate", "--link_rate")


def check_emulation(config_or_args) -> Optional[EmulationPlan]:
    """The emulated cluster asked for (None: none), checked: the flags' values and combination,
    and that this machine can build it (root, ``ip``, ``tc``); ConfigError otherwise."""
    plan = plan_emulation(getattr(config_or_args, "nproc", None), getattr(config_or_args, "emulate_nodes", None),
                          getattr(config_or_args, "link_rate", None))
    if plan is not None:
        check_available()
    return plan


def execute(config_or_args, worker: Callable[..., object], command: Sequence[str]) -> int:
    """Run ``worker`` here, or under the local launcher when ``--nproc`` is given (on an emulated
    cluster with ``--emulate-nodes`` and ``--link-rate``)."""
    nproc = getattr(config_or_args, "nproc", None)
    if nproc is not None and nproc < 1:
        raise ConfigError(f"{{nproc}} {nproc} is invalid: use an integer >= 1 (the number of local ranks)")
    plan = check_emulation(config_or_args)
    if nproc is None:
        worker(config_or_args)
        return 0
    from crossover_sgd.runtime.exit import mark_distributed
    from crossover_sgd.runtime.launch import detect_launch
    from crossover_sgd.runtime.local_launcher import launch_local, strip_flag

    if detect_launch().launcher != "single":
        raise ConfigError(f"--nproc {nproc} starts local ranks, but this process was already started "
                          f"by {detect_launch().launcher}: drop --nproc")
    tolerant = False
    if isinstance(config_or_args, TrainConfig) and config_or_args.options is not None:
        cls = ALGORITHMS[config_or_args.algorithm]
        tolerant = cls.tolerates_lost_peers(cls.options_of(config_or_args))
    for flag in _LAUNCHER_FLAGS:
        command = strip_flag(command, flag)
    mark_distributed()  # the launcher of a distributed job: it ends with os._exit too (runtime.exit)
    return launch_local(nproc, command, tolerate_lost=tolerant, emulate_nodes=plan.nodes if plan else None,
                        link_rate=plan.rate_bits_per_s if plan else None)


def run_train(config: TrainConfig, command: List[str], flag_names: Optional[Dict[str, str]] = None) -> int:
    """Check ``config`` and train; ``command`` is what ``--nproc`` re-runs in every rank;
    ``flag_names`` writes settings as the entry point's flags (legacy names)."""
    config.validate()
    check_emulation(config)  # before anything is printed or started
    if config.nproc is not None:
        from crossover_sgd.training.outputs import default_out_dir
        from crossover_sgd.training.preflight import check_local_gpus, launcher_device, preflight

        if config.out is None:  # choose it once for every rank, and tell the user where it is
            config.out = str(default_out_dir(config))
            command = command + ["--out", config.out]
        preflight(config, config.nproc, launcher_device(config))
        check_local_gpus(config, config.nproc)
        # stdout: stderr is kept for errors (bad input found in the ranks is then its only line)
        print(f"{PROG}: {config.nproc} local ranks, outputs in {config.out}", flush=True)
    from crossover_sgd.training.run import run_worker

    return execute(config, functools.partial(run_worker, flag_names=flag_names), command)


def _launch_info(args: argparse.Namespace, command: List[str]) -> int:
    from crossover_sgd.runtime.report import check_json, launch_report

    if args.nproc is not None:
        check_json(args.json)  # once here, before any rank starts
    return execute(args, launch_report, command)


def _netcheck(args: argparse.Namespace, command: List[str]) -> int:
    from crossover_sgd.runtime.netcheck import check_args, run_netcheck
    from crossover_sgd.runtime.report import check_json

    check_args(args)
    if args.nproc is not None:
        check_json(args.json)  # once here, before any rank starts
    return execute(args, run_netcheck, command)


def console_main() -> None:
    """The ``crossover-sgd`` console script and ``python -m crossover_sgd``: :func:`main`, then
    exit (at once after a distributed run: see :mod:`crossover_sgd.runtime.exit`)."""
    from crossover_sgd.runtime.exit import exit_process

    exit_process(main())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` and run the command; return the exit code (callable in-process)."""
    claim_error_channel()  # in a rank of --nproc N: before anything starts another process
    argv = list(sys.argv[1:] if argv is None else argv)
    command = [sys.executable, "-m", "crossover_sgd"] + argv  # what --nproc re-runs in every rank
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return report_errors(lambda: run_train(config_from_args(args), command), PROG)
    if hasattr(args, "handler"):  # experiment, plot
        return report_errors(lambda: args.handler(args), PROG)
    if getattr(args, "netcheck", False):
        return report_errors(lambda: _netcheck(args, command), PROG)
    return report_errors(lambda: _launch_info(args, command), PROG)
