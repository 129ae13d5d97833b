"""``crossover-sgd ecl``: the original peer-to-peer research code's command line, mapped onto
:class:`TrainConfig`.

Takes the argument layout of the seed's ``main.py`` (Edge-Consensus Learning; the fork
etri-clara/etrl-P2PLearning) verbatim, so its run scripts work by changing only the program name
(``python main.py`` -> ``crossover-sgd ecl``)::

    crossover-sgd ecl DATADIR OUTDIR [--epochs N --batch_size B ...] OPTIMIZER [nodename conf host] [--lr ...]

    crossover-sgd ecl ./data ./output/ring1 --epochs 200 --batch_size 100 --l2_lambda 0.01 \\
        --model_name resnet50 --dataset_name cifar10 --group_channels 32 --drop_rate 0.1 \\
        --last_drop_rate 0.5 --loglevel INFO --train_data_length 10000 --cuda_device_no 1 --skip_plots \\
        --scheduler StepLR --step_size 410 --gamma 0.9 --sleep_factor 0 \\
        DSGD node0 ./conf/node_list.json ./conf/hosts.json --lr 0.002 --swap_timeout 10 --async_step

As in the original, the general flags come before OPTIMIZER and the optimizer's own after it. A
flag that is absent takes the *original's* default (epochs 1000, batch_size 64, lr 0.002,
l2_lambda 0.001, resnet50, train_data_length 12800, ...), not ``crossover-sgd train``'s.
Every peer-to-peer node is started by hand, one process per node (``nodename``: its rank is its
place in ``host``, the rendezvous the first host's address and port), each with its own OUTDIR
if wished.

Mapping (original -> ``crossover-sgd train`` setting):

=============================  ==============================================================
original                       here
=============================  ==============================================================
DATADIR                        ``--data-dir`` (ignored for the datasets that read no files)
OUTDIR                         ``--out``; per-node CSV ``OUTDIR/nodes/<nodename>.csv`` with the
                               original's columns ``epoch, train_loss, val_loss, test_loss,
                               train_acc, val_acc, test_acc`` first
--dataset_name (cifar10)       ``--dataset`` (any case): cifar10 and every other dataset the
                               package has (mnist, digits, synthetic, imagefolder, imagenet)
--model_name resnet50          ``--model resnet50 --norm group --group-channels --drop-rate
                               --last-drop-rate`` (GroupNorm ResNet-50 with dropout)
--model_name logistics         ``--model logistic`` (no dropout, no normalisation: the original
                               ignored --group_channels/--drop_rate/--last_drop_rate too; a value
                               other than their defaults gets a warning)
--train_data_length (12800)    ``--train-data-length`` (a cap on the node's training samples)
(the data split)               peer-to-peer: ``--partition noniid`` (the original's split: 8 of 10
                               classes per node); sgd: ``--partition iid`` over one node (the whole
                               training set, capped by --train_data_length)
--l2_lambda (0.001)            ``--l2-lambda``
--scheduler none               ``--lr-schedule constant``
--scheduler StepLR             ``--lr-schedule step --step-milestones S 2S 3S ... --step-gamma G``
  --step_size S --gamma G      (the original called StepLR once per *epoch*; ``--step-size``
                               counts optimizer steps, so the epochs become milestones; none
                               falls inside training when S >= --epochs: no decay, as there)
(warmup)                       ``--warmup-epochs 0`` (the original had none)
--epochs (1000)                ``--epochs``
--batch_size (64)              ``--batch-size``
--seed (569)                   ``--seed``: one seed drives the data split, the (common) initial
--data_init_seed (11)          model and the shuffling. --data_init_seed/--model_init_seed are
--model_init_seed (13)         accepted; a value other than their default gets a warning
--cpu                          ``--device cpu``
--cuda_device_no N (0)         the N-th visible GPU (``CUDA_VISIBLE_DEVICES`` narrowed to it,
                               ``--device cuda``); no GPU at all: the CPU, with a one-line warning
                               (the original crashed); N beyond the GPUs: error
--skip_plots                   accepted; training draws no figures here (``crossover-sgd plot
                               OUTDIR`` does)
--sleep_factor F (0)           ``--sleep-factor`` (peer-to-peer: sleep F times each step's time;
                               the original slept after each epoch)
--loglevel (DEBUG)             ``--log-level`` (DEBUG, INFO, WARNING, ERROR, CRITICAL in any case;
                               WARN and FATAL also accepted)
--logfile FILE                 accepted with a warning: the log goes to stderr (and OUTDIR/train.log
                               of the first node)
OPTIMIZER                      ``--algorithm``: sgd -> allreduce (one process, one rank: plain SGD),
                               DSGD -> dsgd, GossipSGD -> gossip-sgd, PdmmSGD -> pdmm-sgd,
                               AdmmSGD -> admm-sgd, PdmmISVR -> pdmm-isvr, AdmmISVR -> admm-isvr,
                               CADMM -> cadmm; adam: refused (no Adam here)
nodename conf host             ``--node-name --node-list --hosts``
--lr (0.002)                   ``--lr``
--momentum --weight_decay      ``--momentum --weight-decay --nesterov`` (sgd, DSGD, GossipSGD; 0,
--nesterov                     0 and off by default, as there; the other optimizers: 0)
--dampening (0)                0 accepted; another value refused (the package's SGD has none)
--weight (1.0)                 accepted; no effect (the original ignored it too); not 1: warning
--mu (200)                     PdmmSGD/AdmmSGD: accepted; no effect (mu = 1/--lr, in the original
                               as well); not 200: warning
--eta --rho                    ``--eta --rho`` (the original hard-coded 1.0 and 0.1 whatever was
                               given; here they are honoured)
--use_gcoef --piw              ``--use-gcoef True --piw`` (PdmmISVR, AdmmISVR)
--rho_init --rho_scaling       ``--rho-init --rho-scaling --primal-iterations`` (CADMM: not in the
--primal_iterations            original; its flags follow the package's options)
--async_step                   ``--async-step True``; absent: synchronous (the original's dest
                               ``round_step`` defaulted to True)
--swap_timeout S               ``--swap-timeout S`` seconds, a whole number >= 1; default per
                               optimizer as in the original: DSGD, GossipSGD, PdmmSGD, AdmmSGD 1,
                               PdmmISVR 100, AdmmISVR 1000 (CADMM 1)
=============================  ==============================================================

The seed's README lists the flags of sgd, adam, DSGD, PdmmISVR and AdmmISVR; those of GossipSGD
(as DSGD), PdmmSGD and AdmmSGD (``--lr --mu --eta --rho``) are its fork's ``main.py``'s. The log
goes to stderr as in the original without --logfile (a Quickstart's ``> OUTDIR/nodeN.txt`` keeps
working: it receives stdout); the first node (rank 0) logs at --loglevel, the others warnings only.

Bad input ends with one line ``crossover-sgd ecl: error: ...`` (settings named by the original's
flags) and exit code 2; warnings are one line each, ``crossover-sgd ecl: warning: ...``.

Layering: this module sits below :mod:`crossover_sgd.cli`, which registers the subcommand
(:func:`add_subparser`) and hands it :func:`crossover_sgd.cli.run_train`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from crossover_sgd.algorithms import make_config
from crossover_sgd.config import DATASETS, LOG_LEVELS, TrainConfig
from crossover_sgd.console import OneLineParser, bounded_int, report_errors, suggest_flag
from crossover_sgd.errors import ConfigError

__all__ = ["PROG", "ALGORITHM_OF", "SWAP_TIMEOUT", "ECL_NAMES", "Translation", "build_ecl_parser", "parse", "translate",
           "add_subparser", "main"]

PROG = "crossover-sgd ecl"

#: OPTIMIZER -> --algorithm (``adam`` is parsed, then refused: the package has no Adam).
ALGORITHM_OF = {"sgd": "allreduce", "DSGD": "dsgd", "GossipSGD": "gossip-sgd", "PdmmSGD": "pdmm-sgd",
                "AdmmSGD": "admm-sgd", "PdmmISVR": "pdmm-isvr", "AdmmISVR": "admm-isvr", "CADMM": "cadmm"}
#: The original's --swap_timeout default (seconds) of each peer-to-peer optimizer (CADMM: not in the original).
SWAP_TIMEOUT = {"DSGD": 1, "GossipSGD": 1, "AdmmSGD": 1, "PdmmSGD": 1, "PdmmISVR": 100, "AdmmISVR": 1000, "CADMM": 1}
PEER_TO_PEER = tuple(SWAP_TIMEOUT)
#: The original's defaults of the flags that only get a warning when changed.
DEFAULT_DATA_INIT_SEED, DEFAULT_MODEL_INIT_SEED, DEFAULT_WEIGHT, DEFAULT_MU = 11, 13, 1.0, 200
DEFAULT_GROUP_CHANNELS, DEFAULT_DROP_RATE, DEFAULT_LAST_DROP_RATE = 32, 0.1, 0.5
#: Datasets that read no files: DATADIR is not passed on.
NO_FILES = ("digits", "synthetic")

#: Setting -> the original's name for it (messages name what its users typed).
ECL_NAMES = {
    "data_dir": "DATADIR", "out": "OUTDIR", "dataset": "--dataset_name", "model": "--model_name",
    "epochs": "--epochs", "batch_size": "--batch_size", "seed": "--seed", "l2_lambda": "--l2_lambda",
    "train_data_length": "--train_data_length", "group_channels": "--group_channels", "drop_rate": "--drop_rate",
    "last_drop_rate": "--last_drop_rate", "lr_schedule": "--scheduler", "step_milestones": "--step_size",
    "step_gamma": "--gamma", "sleep_factor": "--sleep_factor", "log_level": "--loglevel", "algorithm": "OPTIMIZER",
    "lr": "--lr", "momentum": "--momentum", "weight_decay": "--weight_decay", "nesterov": "--nesterov",
    "node_name": "nodename", "node_list": "conf", "hosts": "host", "async_step": "--async_step",
    "swap_timeout": "--swap_timeout", "piw": "--piw", "use_gcoef": "--use_gcoef", "eta": "--eta", "rho": "--rho",
    "rho_init": "--rho_init", "rho_scaling": "--rho_scaling", "primal_iterations": "--primal_iterations",
}


class EclParser(OneLineParser):
    """A one-line parser whose errors name ``crossover-sgd ecl`` (the optimizers' parsers too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message}{suggest_flag(self, message)}\n")


def log_level(text: str) -> str:
    """``--loglevel``: the original's level names (any case), WARN and FATAL as aliases."""
    name = text.strip().upper()
    name = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name)
    if name not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level: use one of {', '.join(LOG_LEVELS)}")
    return name


#: ``--swap_timeout``: a whole number of seconds >= 1 (the original's int).
seconds = bounded_int("a whole number of seconds", 1, why="how long a silent neighbour is waited for before it is dropped")


def build_ecl_parser() -> argparse.ArgumentParser:
    """The original ``main.py``'s parser: the same positionals, flags, defaults and optimizers."""
    p = EclParser(prog=PROG, description="The original peer-to-peer code's command line (python main.py ...), "
                  "run by crossover-sgd. See the module crossover_sgd.ecl for how each flag maps.")
    p.add_argument("datadir", help="dataset path (DATADIR)")
    p.add_argument("outdir", help="output path (OUTDIR)")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=569)
    p.add_argument("--data_init_seed", type=int, default=DEFAULT_DATA_INIT_SEED,
                   help="accepted; --seed drives the split")
    p.add_argument("--model_init_seed", type=int, default=DEFAULT_MODEL_INIT_SEED,
                   help="accepted; --seed drives the initial model")
    p.add_argument("--l2_lambda", type=float, default=0.001, help="the loss gains L2_LAMBDA / 2 * ||w||^2")
    p.add_argument("--model_name", default="resnet50", choices=["logistics", "resnet50"])
    p.add_argument("--dataset_name", default="cifar10", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--train_data_length", type=int, default=12800, help="a cap on each node's training samples")
    p.add_argument("--group_channels", type=int, default=DEFAULT_GROUP_CHANNELS)
    p.add_argument("--drop_rate", type=float, default=DEFAULT_DROP_RATE)
    p.add_argument("--last_drop_rate", type=float, default=DEFAULT_LAST_DROP_RATE)
    p.add_argument("--cpu", dest="cuda", default=True, action="store_false")
    p.add_argument("--cuda_device_no", type=int, default=0, help="the N-th visible GPU (the CPU if there is none)")
    p.add_argument("--skip_plots", dest="plot", default=True, action="store_false",
                   help="accepted (figures: crossover-sgd plot OUTDIR)")
    p.add_argument("--scheduler", default="none", choices=["none", "StepLR"])
    p.add_argument("--step_size", type=int, default=5, help="StepLR: decay every STEP_SIZE epochs")
    p.add_argument("--gamma", type=float, default=0.90)
    p.add_argument("--sleep_factor", type=float, default=0.0)
    p.add_argument("--loglevel", type=log_level, default="DEBUG", help=f"one of {', '.join(LOG_LEVELS)}")
    p.add_argument("--logfile", default=None, help="accepted with a warning (the log goes to stderr)")

    optimizers = p.add_subparsers(title="optimizer", dest="optimizer", metavar="OPTIMIZER", required=True,
                                  parser_class=EclParser)
    sgd = optimizers.add_parser("sgd", help="one node, plain SGD")
    _sgd_flags(sgd)
    adam = optimizers.add_parser("adam", help="refused: there is no Adam here")
    adam.add_argument("--lr", type=float, default=0.002)
    adam.add_argument("--betas", type=float, default=(0.9, 0.999), nargs=2)
    adam.add_argument("--eps", type=float, default=1e-8)
    adam.add_argument("--weight_decay", type=float, default=0.0)
    adam.add_argument("--amsgrad", default=False, action="store_true")
    for name in ("DSGD", "GossipSGD"):
        o = _node(optimizers, name)
        _sgd_flags(o)
        o.add_argument("--weight", type=float, default=DEFAULT_WEIGHT, help="accepted; no effect (as in the original)")
        _exchange_flags(o, name)
    for name in ("AdmmSGD", "PdmmSGD"):
        o = _node(optimizers, name)
        o.add_argument("--lr", type=float, default=0.002)
        o.add_argument("--mu", type=int, default=DEFAULT_MU, help="accepted; no effect (mu = 1/lr)")
        o.add_argument("--eta", type=float, default=1.0)
        o.add_argument("--rho", type=float, default=0.1)
        _exchange_flags(o, name)
    for name in ("PdmmISVR", "AdmmISVR"):
        o = _node(optimizers, name)
        o.add_argument("--lr", type=float, default=0.002)
        o.add_argument("--use_gcoef", default=False, action="store_true")
        o.add_argument("--piw", type=float, default=1.0, choices=[0.5, 1.0, 2.0])
        _exchange_flags(o, name)
    o = _node(optimizers, "CADMM")
    o.add_argument("--lr", type=float, default=0.002)
    o.add_argument("--rho_init", type=float, default=0.1)
    o.add_argument("--rho_scaling", type=float, default=1.0)
    o.add_argument("--primal_iterations", type=int, default=2)
    _exchange_flags(o, "CADMM")
    return p


def _sgd_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--dampening", type=float, default=0.0, help="0 only")
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--nesterov", default=False, action="store_true")


def _node(optimizers, name: str) -> argparse.ArgumentParser:
    parser = optimizers.add_parser(name, help=f"peer-to-peer: --algorithm {ALGORITHM_OF[name]}")
    parser.add_argument("nodename", help="this node's name (in conf and host)")
    parser.add_argument("conf", help="node_list.json")
    parser.add_argument("host", help="hosts.json")
    return parser


def _exchange_flags(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--async_step", dest="round_step", default=True, action="store_false",
                        help="no waiting for neighbours (default: synchronous)")
    parser.add_argument("--swap_timeout", type=seconds, default=SWAP_TIMEOUT[name],
                        help=f"drop a neighbour silent for this many seconds (default {SWAP_TIMEOUT[name]})")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The original flags of ``argv`` (SystemExit 2 with one line for bad syntax). A general flag
    given after OPTIMIZER is refused as the original refused it, saying where it belongs."""
    parser = build_ecl_parser()
    args, extra = parser.parse_known_args(list(argv))
    if extra:
        general = {o for action in parser._actions for o in action.option_strings} - {"-h", "--help"}
        misplaced = [w.split("=", 1)[0] for w in extra if w.split("=", 1)[0] in general]
        if misplaced:
            parser.exit(2, f"{PROG}: error: unrecognized arguments: {' '.join(extra)} ({misplaced[0]} is a general "
                           f"flag: give it before OPTIMIZER {args.optimizer}, as the original did)\n")
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


@dataclass
class Translation:
    """What an original command line means here: the run's settings, the environment this process
    needs before CUDA starts (the chosen GPU), and the warnings to print (one line each)."""

    config: TrainConfig
    env: Dict[str, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


def visible_gpus() -> int:
    """The GPUs this process may use. torch counts them with NVML (honouring
    ``CUDA_VISIBLE_DEVICES``) without initialising CUDA, so that ``CUDA_VISIBLE_DEVICES`` can still
    be narrowed afterwards; only where NVML fails does it ask the CUDA runtime, after which the
    narrowing comes too late and the node takes the first visible GPU."""
    import torch

    return torch.cuda.device_count()


def translate(args: argparse.Namespace, gpus: Optional[int] = None) -> Translation:
    """Map the parsed original flags onto a TrainConfig (not validated yet: the files it names are
    read when the run starts). ``gpus``: how many GPUs are visible (None: ask torch). ConfigError for
    what cannot be honoured."""
    name = args.optimizer
    if name == "adam":
        raise ConfigError("OPTIMIZER adam cannot be honoured: crossover-sgd has no Adam; use sgd (with --momentum) "
                          "or a peer-to-peer optimizer")
    if getattr(args, "dampening", 0.0) != 0.0:
        raise ConfigError(f"--dampening {args.dampening:g} cannot be honoured: the SGD here has no dampening; "
                          "use --dampening 0")
    warnings: List[str] = []
    values: Dict[str, object] = dict(
        algorithm=ALGORITHM_OF[name], epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        l2_lambda=args.l2_lambda, lr=args.lr, momentum=getattr(args, "momentum", 0.0),
        weight_decay=getattr(args, "weight_decay", 0.0), nesterov=getattr(args, "nesterov", False),
        warmup_epochs=0.0, log_level=args.loglevel, out=args.outdir,
        train_data_length=args.train_data_length, partition="noniid" if name in PEER_TO_PEER else "iid")
    values.update(_data(args), **_model(args, warnings), **_schedule(args), **_optimizer(args, name, warnings))
    device, env = _device(args, gpus, warnings)
    values["device"] = device
    for flag, value, default, why in (
            ("--data_init_seed", args.data_init_seed, DEFAULT_DATA_INIT_SEED, "--seed drives the data split"),
            ("--model_init_seed", args.model_init_seed, DEFAULT_MODEL_INIT_SEED,
             "--seed drives the initial model (common to every node)")):
        if value != default:
            warnings.append(f"{flag} {value} has no effect: {why}")
    if args.logfile is not None:
        warnings.append(f"--logfile {args.logfile} is not written: the log goes to stderr "
                        "(and OUTDIR/train.log of the first node)")
    return Translation(make_config(**values), env, warnings)


def _data(args: argparse.Namespace) -> Dict[str, object]:
    dataset = args.dataset_name.lower()
    return {"dataset": dataset, "data_dir": None if dataset in NO_FILES else args.datadir}


def _model(args: argparse.Namespace, warnings: List[str]) -> Dict[str, object]:
    if args.model_name == "resnet50":
        return {"model": "resnet50", "norm": "group", "group_channels": args.group_channels,
                "drop_rate": args.drop_rate, "last_drop_rate": args.last_drop_rate}
    changed = [f"{flag} {value:g}" for flag, value, default in (
        ("--group_channels", args.group_channels, DEFAULT_GROUP_CHANNELS),
        ("--drop_rate", args.drop_rate, DEFAULT_DROP_RATE),
        ("--last_drop_rate", args.last_drop_rate, DEFAULT_LAST_DROP_RATE)) if value != default]
    if changed:
        warnings.append(f"{', '.join(changed)} ha{'s' if len(changed) == 1 else 've'} no effect with "
                        "--model_name logistics (a single linear layer)")
    return {"model": "logistic", "drop_rate": 0.0, "last_drop_rate": 0.0}


def _schedule(args: argparse.Namespace) -> Dict[str, object]:
    if args.scheduler == "none":
        return {"lr_schedule": "constant"}
    if args.step_size < 1:
        raise ConfigError(f"--step_size {args.step_size} is invalid: use an integer >= 1 (epochs between decays)")
    # StepLR stepped once per epoch: decay after every STEP_SIZE epochs that fall inside training
    return {"lr_schedule": "step", "step_milestones": tuple(range(args.step_size, args.epochs, args.step_size)),
            "step_gamma": args.gamma}


def _optimizer(args: argparse.Namespace, name: str, warnings: List[str]) -> Dict[str, object]:
    if getattr(args, "weight", DEFAULT_WEIGHT) != DEFAULT_WEIGHT:
        warnings.append(f"--weight {args.weight:g} has no effect (the original ignored it too)")
    if getattr(args, "mu", DEFAULT_MU) != DEFAULT_MU:
        warnings.append(f"--mu {args.mu} has no effect: mu = 1/--lr (in the original as well)")
    if name not in PEER_TO_PEER:
        return {"sleep_factor": args.sleep_factor}
    values: Dict[str, object] = {"node_name": args.nodename, "node_list": args.conf, "hosts": args.host,
                                 "async_step": not args.round_step, "swap_timeout": float(args.swap_timeout),
                                 "sleep_factor": args.sleep_factor}
    if name in ("PdmmSGD", "AdmmSGD"):
        values.update(eta=args.eta, rho=args.rho)
    elif name in ("PdmmISVR", "AdmmISVR"):
        values.update(piw=args.piw, use_gcoef=args.use_gcoef)
    elif name == "CADMM":
        values.update(rho_init=args.rho_init, rho_scaling=args.rho_scaling, primal_iterations=args.primal_iterations)
    return values


def _device(args: argparse.Namespace, gpus: Optional[int], warnings: List[str]) -> tuple:
    """(--device, environment): the CPU, or the N-th visible GPU made the only one this process sees."""
    if not args.cuda:
        return "cpu", {}
    number = args.cuda_device_no
    if number < 0:
        raise ConfigError(f"--cuda_device_no {number} is invalid: use a GPU number >= 0")
    gpus = visible_gpus() if gpus is None else gpus
    if gpus == 0:
        warnings.append(f"no CUDA GPU is visible: running on the CPU (--cuda_device_no {number} ignored; "
                        "give --cpu to say so)")
        return "cpu", {}
    if number >= gpus:
        raise ConfigError(f"--cuda_device_no {number} is invalid: this process sees {gpus} GPU(s), numbered "
                          f"0 to {gpus - 1}")
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    chosen = listed[number] if number < len(listed) else str(number)
    return "cuda", {"CUDA_VISIBLE_DEVICES": chosen}


def main(argv: Sequence[str], train: Callable[..., int]) -> int:
    """Run ``crossover-sgd ecl ARGV``; ``train`` is :func:`crossover_sgd.cli.run_train` (handed
    in by the command line, which sits above this module)."""
    argv = list(argv)
    args = parse(argv)  # bad syntax: one line, exit 2
    command = [sys.executable, "-m", "crossover_sgd", "ecl", *argv]

    def action() -> int:
        translation = translate(args)
        translation.config.validate()  # bad input is its one line: before any warning
        for warning in translation.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr, flush=True)
        os.environ.update(translation.env)  # before anything starts CUDA
        return train(translation.config, command, flag_names=ECL_NAMES)

    return report_errors(action, PROG, ECL_NAMES)


def add_subparser(subparsers, train: Callable[..., int]) -> argparse.ArgumentParser:
    """Register ``ecl`` on the ``crossover-sgd`` subcommands. The words after ``ecl`` are parsed by
    :func:`build_ecl_parser` (the original's layout, its errors as ``crossover-sgd ecl: error``):
    the subcommand only collects them (its prefix character is one no argument can start with, so
    every word, ``--help`` included, is collected as it is)."""
    parser = subparsers.add_parser("ecl", help="run the original peer-to-peer code's command line "
                                   "(python main.py DATADIR OUTDIR ... OPTIMIZER ...)", add_help=False,
                                   prefix_chars="\0", usage=f"{PROG} DATADIR OUTDIR [flags] OPTIMIZER ...")
    parser.add_argument("words", nargs="*")
    parser.set_defaults(handler=lambda args: main(args.words, train))
    return parser
