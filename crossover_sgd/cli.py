"""The ``crossover-sgd`` command line (also ``python -m crossover_sgd``).

Subcommands: ``train`` (a training run, optionally spawning ``--nproc`` local ranks) and
``launch-info`` (what each rank detects about its launch: a check of a cluster setup).
Bad input ends with one line ``crossover-sgd: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from crossover_sgd.config import DATASETS, LOG_LEVELS, LR_SCHEDULES, MODELS, TrainConfig, parse_bool, rename_flags
from crossover_sgd.errors import ConfigError, DivergedError
from crossover_sgd.runtime.local_launcher import CONFIG_ERROR_EXIT, claim_error_channel

__all__ = ["main", "build_parser", "OneLineParser", "str_bool", "run_train", "report_errors"]

PROG = "crossover-sgd"
#: How long a rank that leaves the report of a shared error to rank 0 waits before exiting.
QUIET_EXIT_DELAY_S = 3.0


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog.split()[0]}: error: {message}\n")


def str_bool(text: str) -> bool:
    """argparse type for the original scripts' ``True``/``False`` strings."""
    try:
        return parse_bool(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def log_level(text: str) -> str:
    """argparse type for ``--log-level``: a logging level name, in any case."""
    if text.upper() in LOG_LEVELS:
        return text.upper()
    raise argparse.ArgumentTypeError(f"{text!r} is not a log level: use one of {', '.join(LOG_LEVELS)}")


def _add(group, *names: str, **kwargs) -> None:
    """Add a flag under its dashed name and its underscored alias (``--batch-size``/``--batch_size``)."""
    aliases = []
    for name in names:
        aliases.append(name)
        underscored = name.replace("-", "_").replace("__", "--", 1)
        if underscored != name:
            aliases.append(underscored)
    group.add_argument(*aliases, **kwargs)


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = parser.add_argument_group("algorithm")
    _add(g, "--algorithm", default=d.algorithm, help="allreduce, sgp, crossover or hierarchical-crossover")
    _add(g, "--sync-grad", type=str_bool, default=d.sync_grad, metavar="BOOL",
         help="allreduce: average gradients before the step (True) or parameters after it (False)")
    _add(g, "--chromosome", default=d.chromosome, help="crossover segments: coarse (stages) or fine (blocks)")
    _add(g, "--segments", type=int, default=None, help="crossover: N segments of about equal bytes instead")
    _add(g, "--fair", type=str_bool, default=d.fair, metavar="BOOL",
         help="crossover: load-balanced senders (False: the study's 'no fairness' ablation)")
    _add(g, "--segmented", type=str_bool, default=d.segmented, metavar="BOOL",
         help="crossover: a peer per segment (False: the 'no segmentation' ablation)")
    _add(g, "--groupnum", type=int, default=None,
         help="hierarchical-crossover: number of nodes (default: the launcher's / --gpu_per_node)")
    _add(g, "--sgp-peers", type=int, default=d.sgp_peers, help="sgp: out-peers per round")
    _add(g, "--gossip-overlap", "--sgp-overlap", type=str_bool, default=d.gossip_overlap, metavar="BOOL",
         help="sgp, crossover: overlap the exchange with the next step's computation, mixed one step late "
              "(for sgp: OSGP)")
    _add(g, "--gossip-buffers", type=str_bool, default=d.gossip_buffers, metavar="BOOL",
         help="gossip: also mix BatchNorm running statistics")
    _add(g, "--gossip-momentum", type=str_bool, default=d.gossip_momentum, metavar="BOOL",
         help="gossip: also mix momentum buffers (default: kept local, as in the study)")
    _add(g, "--gossip-dtype", default=d.gossip_dtype,
         help="gossip: dtype of messages: model (default), fp32, fp16 or bf16 (half the bytes)")
    g = parser.add_argument_group("data and model")
    _add(g, "--dataset", default=d.dataset, help=f"one of {', '.join(DATASETS)} (default: the embedded digits)")
    _add(g, "--data-dir", "--data", default=None, help="data directory (never downloaded)")
    _add(g, "--model", default=d.model, help=f"one of {', '.join(MODELS)}")
    _add(g, "--image-size", type=int, default=None, help="crop size for image folders / synthetic data")
    _add(g, "--synthetic-samples", type=int, default=d.synthetic_samples)
    _add(g, "--synthetic-classes", type=int, default=d.synthetic_classes)
    _add(g, "--workers", type=int, default=d.workers, help="data-loading worker processes per rank")
    g = parser.add_argument_group("optimisation")
    _add(g, "--batch-size", type=int, default=d.batch_size, help="samples per micro-batch per rank")
    _add(g, "--local-itr", "--accum-steps", type=int, default=d.local_itr,
         help="micro-batches accumulated per optimizer step")
    _add(g, "--epochs", type=int, default=d.epochs)
    _add(g, "--lr", type=float, default=d.lr, help="peak learning rate")
    _add(g, "--momentum", type=float, default=d.momentum)
    _add(g, "--nesterov", type=str_bool, default=d.nesterov, metavar="BOOL")
    _add(g, "--weight-decay", type=float, default=d.weight_decay)
    _add(g, "--label-smoothing", type=float, default=d.label_smoothing)
    _add(g, "--clip-grad-norm", type=float, default=d.clip_grad_norm, help="max gradient norm (0: off)")
    _add(g, "--lr-schedule", default=d.lr_schedule, help=f"one of {', '.join(LR_SCHEDULES)}")
    _add(g, "--warmup-epochs", type=float, default=d.warmup_epochs)
    _add(g, "--poly-power", type=float, default=d.poly_power)
    _add(g, "--poly-end", type=float, default=d.poly_end, help="poly: final lr as a fraction of the peak")
    _add(g, "--poly-hold-epochs", type=int, default=d.poly_hold_epochs)
    _add(g, "--step-milestones", type=int, nargs="+", default=list(d.step_milestones), metavar="EPOCH")
    _add(g, "--step-gamma", type=float, default=d.step_gamma)
    _add(g, "--wd-schedule", type=str_bool, default=d.wd_schedule, metavar="BOOL",
         help="scale weight decay by the learning-rate schedule's factor (the study's poly recipe)")
    g = parser.add_argument_group("LARS and mixed precision")
    _add(g, "--lars", type=str_bool, default=d.lars, metavar="BOOL", help="use LARS (MXNet style) instead of SGD")
    _add(g, "--lars-coef", type=float, default=d.lars_coef, help="LARS trust coefficient eta")
    _add(g, "--lars-momentum-form", default=d.lars_momentum_form,
         help="mxnet (lr inside the momentum buffer, the study's) or pytorch")
    _add(g, "--lars-momentum-correction", type=str_bool, default=d.lars_momentum_correction, metavar="BOOL",
         help="mxnet form: rescale momentum when the lr changes (equals the pytorch form)")
    _add(g, "--lars-trust-clip", type=float, default=None, help="clip the trust ratio (LARC style; 1: lr cap)")
    _add(g, "--sync-lars-group-size", type=int, default=None,
         help="LARS norms of the sum of weights/gradients over groups of this many consecutive ranks")
    _add(g, "--sync-lars-start-epoch", type=int, default=d.sync_lars_start_epoch,
         help="epoch from which LARS norms are synchronised")
    _add(g, "--amp", default=d.amp, help="mixed precision: off, fp16 (GPU, GradScaler) or bf16")
    _add(g, "--channels-last", type=str_bool, default=d.channels_last, metavar="BOOL",
         help="channels_last memory format (faster convolutions on GPUs)")
    _add(g, "--skip-nonfinite", type=str_bool, default=d.skip_nonfinite, metavar="BOOL",
         help="skip optimizer steps whose gradients are not finite")
    g = parser.add_argument_group("outputs")
    _add(g, "--out", default=None, help="output directory (default: runs/<tag or algorithm>-<time>)")
    _add(g, "--tag", default=None, help="a name for the run")
    _add(g, "--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    _add(g, "--eval-every", type=int, default=d.eval_every, help="evaluate every N epochs (and after the last epoch)")
    _add(g, "--checkpoint-every", type=int, default=d.checkpoint_every, help="checkpoint every N epochs")
    _add(g, "--stop-at-step", type=int, default=None,
         help="checkpoint and exit after this optimizer step (resume later with --resume)")
    _add(g, "--seed", "--manual-seed", type=int, default=d.seed)
    _add(g, "--log-level", type=log_level, default=d.log_level, metavar="LEVEL",
         help=f"one of {', '.join(LOG_LEVELS)} (any case; ranks other than 0 log warnings and errors only)")
    _add(g, "--tensorboard", type=str_bool, default=d.tensorboard, metavar="BOOL",
         help="also write rank 0's metrics as TensorBoard scalars to OUT/tensorboard")
    g = parser.add_argument_group("runtime")
    _add(g, "--nproc", type=int, default=None, help="start N local ranks (the local launcher)")
    _add(g, "--world-size", type=int, default=None, help="expected world size (checked against the launcher)")
    _add(g, "--gpu-per-node", type=int, default=None, help="ranks per node (overrides the launcher's)")
    _add(g, "--backend", default=d.backend, help="auto (NCCL on GPU, Gloo on CPU), nccl or gloo")
    _add(g, "--device", default=d.device, help="auto, cpu or cuda")
    _add(g, "--timeout", type=float, default=d.timeout, help="process-group timeout in seconds")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from the parsed flags of ``add_train_flags``."""
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.field_names()}
    values["step_milestones"] = tuple(values["step_milestones"])
    return TrainConfig(**values)


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
    from crossover_sgd import experiments, plotting

    experiments.add_subparser(sub)
    plotting.add_subparser(sub)
    return parser


def execute(config_or_args, worker: Callable[..., object], command: Sequence[str]) -> int:
    """Run ``worker`` here, or under the local launcher when ``--nproc`` is given."""
    nproc = getattr(config_or_args, "nproc", None)
    if nproc is None:
        worker(config_or_args)
        return 0
    from crossover_sgd.runtime.launch import detect_launch
    from crossover_sgd.runtime.local_launcher import launch_local, strip_flag

    if detect_launch().launcher != "single":
        raise ConfigError(f"--nproc {nproc} starts local ranks, but this process was already started "
                          f"by {detect_launch().launcher}: drop --nproc")
    return launch_local(nproc, strip_flag(command, "--nproc"))


def run_train(config: TrainConfig, command: List[str], flag_names: Optional[Dict[str, str]] = None) -> int:
    """Validate ``config`` and train; ``command`` is what ``--nproc`` re-runs in every rank;
    ``flag_names`` renames flags in the warning about options without effect (legacy names)."""
    config.validate()
    if config.nproc is not None:
        import torch

        from crossover_sgd.training.checkpoint import published_checkpoint
        from crossover_sgd.training.precision import check_amp
        from crossover_sgd.training.data import preflight_data
        from crossover_sgd.training.outputs import check_out_dir
        from crossover_sgd.training.run import default_out_dir

        if config.out is None:  # choose it once for every rank, and tell the user where it is
            config.out = str(default_out_dir(config))
            command = command + ["--out", config.out]
        else:
            check_out_dir(Path(config.out), resume=config.resume)
            if config.resume:
                published_checkpoint(Path(config.out), config.nproc)
        preflight_data(config)
        if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
            check_amp(config.amp, torch.device("cpu"))
        # stdout: stderr is kept for errors (bad input found in the ranks is then its only line)
        print(f"{PROG}: {config.nproc} local ranks, outputs in {config.out}", flush=True)
    from crossover_sgd.training.run import run_worker

    return execute(config, functools.partial(run_worker, flag_names=flag_names), command)


def _launch_info(args: argparse.Namespace, command: List[str]) -> int:
    from crossover_sgd.runtime.report import launch_report

    return execute(args, launch_report, command)


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
        return report_errors(lambda: run_train(config_from_args(args), command))
    if hasattr(args, "handler"):  # experiment, plot
        return report_errors(lambda: args.handler(args))
    return report_errors(lambda: _launch_info(args, command))


def report_errors(action: Callable[[], int], prog: str = PROG, flag_names: Optional[Dict[str, str]] = None) -> int:
    """Run ``action``; bad input becomes one line on stderr and exit code 2.

    ``flag_names`` renames flags in messages (the legacy script's users know other names). In a
    rank of ``--nproc N`` the line goes to the local launcher, which prints it once for all ranks
    (see :mod:`crossover_sgd.runtime.local_launcher`). A ``quiet`` error (every rank found it,
    rank 0 reports it) prints nothing; under other launchers such a rank waits a moment before it
    exits, so that the launcher does not stop rank 0 before its line is out.
    """
    try:
        return action()
    except DivergedError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        channel = claim_error_channel()
        if exc.quiet:
            if channel is None:
                time.sleep(QUIET_EXIT_DELAY_S)
            return CONFIG_ERROR_EXIT
        line = " ".join(f"{prog}: error: {rename_flags(str(exc), flag_names)}".splitlines())  # one line, whatever the message held
        if channel is not None:
            try:
                os.write(channel, (line[:4000] + "\n").encode())  # below PIPE_BUF: one atomic write
                return CONFIG_ERROR_EXIT
            except OSError:
                pass
        print(line, file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
