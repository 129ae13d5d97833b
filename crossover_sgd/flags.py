"""The flags of ``crossover-sgd train``: the generic settings of :class:`TrainConfig` and every
algorithm's options (from the registry), and the TrainConfig they make.

Used by the command line (:mod:`crossover_sgd.cli`) and by the experiments, which check the extra
train flags a user gives them before running anything (:func:`train_config`).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, Sequence

from crossover_sgd.algorithms.registry import REGISTERED, OptionValues, option_groups
from crossover_sgd.config import DATASETS, DTYPES, LOG_LEVELS, LR_SCHEDULES, MODELS, NORMS, PARTITIONS, TrainConfig
from crossover_sgd.console import OneLineParser, add_flag as _add, str_bool
from crossover_sgd.errors import ConfigError

__all__ = ["add_train_flags", "config_from_args", "train_config", "given_train_flags", "log_level"]


def log_level(text: str) -> str:
    """argparse type for ``--log-level``: a logging level name, in any case."""
    if text.upper() in LOG_LEVELS:
        return text.upper()
    raise argparse.ArgumentTypeError(f"{text!r} is not a log level: use one of {', '.join(LOG_LEVELS)}")


def lars_trust_clip(text: str) -> Any:
    """argparse type for ``--lars-trust-clip``: ``larc`` (any case) or a number."""
    if text.strip().lower() == "larc":
        return "larc"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither larc nor a number") from None


_TYPES: Dict[type, Callable[[str], Any]] = {bool: str_bool, int: int, float: float, str: str}


def add_algorithm_flags(parser: argparse.ArgumentParser) -> None:
    """One flag group per group of algorithm options (:func:`registry.option_groups`)."""
    for title, specs in option_groups():
        g = parser.add_argument_group(f"options of {title}")
        for spec in specs:
            switch = {"nargs": "?", "const": True} if spec.type is bool else {}  # --async_step alone: True
            _add(g, f"--{spec.name.replace('_', '-')}", *spec.aliases, dest=spec.name, type=_TYPES[spec.type],
                 default=spec.default, metavar=spec.metavar, help=spec.help, **switch)


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = parser.add_argument_group("algorithm")
    _add(g, "--algorithm", default=d.algorithm, help=", ".join(cls.name for cls in REGISTERED))
    add_algorithm_flags(parser)
    g = parser.add_argument_group("data and model")
    _add(g, "--dataset", default=d.dataset, help=f"one of {', '.join(DATASETS)} (default: the embedded digits)")
    _add(g, "--data-dir", "--data", default=None,
         help="data directory (never downloaded; --dataset mnist1d: where its generated data is cached)")
    _add(g, "--model", default=None,
         help=f"one of {', '.join(MODELS)} (default: small_cnn; cnn1d with --dataset mnist1d)")
    _add(g, "--dtype", default=d.dtype, help=f"{' or '.join(DTYPES)}: the dtype of the parameters and inputs "
         "(float64: checks of an algorithm's math, where equivalences hold to float64 rounding)")
    _add(g, "--image-size", type=int, default=None, help="crop size for image folders / synthetic data")
    _add(g, "--synthetic-samples", type=int, default=d.synthetic_samples)
    _add(g, "--synthetic-classes", type=int, default=d.synthetic_classes)
    _add(g, "--mnist1d-samples", type=int, default=d.mnist1d_samples, metavar="N",
         help="--dataset mnist1d: signals generated, 80%% for training, 20%% for validation (a multiple of 10, "
              ">= 100); cached in --data-dir, else ~/.cache/crossover-sgd")
    _add(g, "--mnist1d-seed", type=int, default=d.mnist1d_seed, metavar="SEED",
         help="--dataset mnist1d: the generator's seed (fixed data whatever --seed)")
    _add(g, "--workers", type=int, default=d.workers, help="data-loading worker processes per rank")
    _add(g, "--partition", default=d.partition,
         help=f"{'|'.join(PARTITIONS)}: how the training set is split over the trainers (shard: by rank, "
              "reshuffled every epoch; iid: a seeded random split; noniid: 80%% of the classes per node, the "
              "original peer-to-peer code's rule; dirichlet: per-class node shares from Dirichlet(alpha))")
    _add(g, "--dirichlet-alpha", type=float, default=d.dirichlet_alpha, help="--partition dirichlet: alpha > 0")
    _add(g, "--train-data-length", type=int, default=None,
         help="a cap on each node's training samples, drawn from its part (partitions other than shard)")
    _add(g, "--local-val-fraction", type=float, default=d.local_val_fraction,
         help="fraction of each node's part held out as its own validation set (partitions other than shard)")
    _add(g, "--norm", default=d.norm, help=f"{' or '.join(NORMS)}: the ResNets' normalisation "
         "(group: GroupNorm with ceil(C / --group-channels) groups)")
    _add(g, "--group-channels", type=int, default=d.group_channels, help="--norm group: channels per group")
    _add(g, "--drop-rate", type=float, default=d.drop_rate,
         help="Dropout2d after the stem and after each stage but the last (0: none)")
    _add(g, "--last-drop-rate", type=float, default=d.last_drop_rate, help="Dropout before the classifier (0: none)")
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
    _add(g, "--l2-lambda", type=float, default=d.l2_lambda, help="the loss gains L2_LAMBDA / 2 * ||w||^2")
    _add(g, "--clip-grad-norm", type=float, default=d.clip_grad_norm, help="max gradient norm (0: off)")
    _add(g, "--lr-schedule", default=d.lr_schedule, help=f"one of {', '.join(LR_SCHEDULES)}")
    _add(g, "--warmup-epochs", type=float, default=d.warmup_epochs)
    _add(g, "--poly-power", type=float, default=d.poly_power)
    _add(g, "--poly-end", type=float, default=d.poly_end, help="poly: final lr as a fraction of the peak")
    _add(g, "--poly-hold-epochs", type=int, default=d.poly_hold_epochs)
    _add(g, "--step-milestones", type=int, nargs="+", default=list(d.step_milestones), metavar="EPOCH")
    _add(g, "--step-gamma", type=float, default=d.step_gamma)
    _add(g, "--step-size", type=int, default=None,
         help="step schedule: decay every STEP_SIZE optimizer steps by --gamma instead of at the milestones")
    _add(g, "--gamma", type=float, default=d.gamma, help="--step-size: the decay factor, 0 < gamma <= 1")
    _add(g, "--wd-schedule", type=str_bool, default=d.wd_schedule, metavar="BOOL",
         help="scale weight decay by the learning-rate schedule's factor (the study's poly recipe)")
    g = parser.add_argument_group("LARS and mixed precision")
    _add(g, "--lars", type=str_bool, default=d.lars, metavar="BOOL", help="use LARS (MXNet style) instead of SGD")
    _add(g, "--lars-coef", type=float, default=d.lars_coef, help="LARS trust coefficient eta")
    _add(g, "--lars-momentum-form", default=d.lars_momentum_form,
         help="mxnet (lr inside the momentum buffer, the study's) or pytorch")
    _add(g, "--lars-momentum-correction", type=str_bool, default=d.lars_momentum_correction, metavar="BOOL",
         help="mxnet form: rescale momentum when the lr changes (equals the pytorch form)")
    _add(g, "--lars-trust-clip", type=lars_trust_clip, default=None, metavar="larc|C",
         help="larc: LARC clipping as in apex/timm, local lr min(t, lr) with t the trust ratio; "
              "a number C > 0: cap the trust ratio, local lr lr*min(t, C) (not LARC); default: neither")
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
    _add(g, "--emulate-nodes", type=int, default=None, metavar="M",
         help="with --nproc N: run the ranks on M emulated nodes (network namespaces, root only; docs/emulation.md)")
    _add(g, "--link-rate", default=None, metavar="RATE",
         help="with --emulate-nodes: the rate of every node's link, both ways (e.g. 200mbit, 1gbit, 10g)")
    _add(g, "--world-size", type=int, default=None, help="expected world size (checked against the launcher)")
    _add(g, "--gpu-per-node", type=int, default=None, help="ranks per node (overrides the launcher's)")
    _add(g, "--backend", default=d.backend, help="auto (NCCL on GPU, Gloo on CPU), nccl or gloo")
    _add(g, "--device", default=d.device, help="auto, cpu or cuda")
    _add(g, "--timeout", type=float, default=d.timeout, help="process-group timeout in seconds")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from the parsed flags of ``add_train_flags``."""
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.field_names()}
    values["step_milestones"] = tuple(values["step_milestones"])
    options = OptionValues({spec.name: getattr(args, spec.name) for _, specs in option_groups() for spec in specs})
    return TrainConfig(**values, options=options)


class _RaisingParser(OneLineParser):
    """A parser whose errors are ConfigErrors (for flags checked inside another command)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def _train_parser() -> _RaisingParser:
    parser = _RaisingParser(prog="crossover-sgd train", add_help=False)
    add_train_flags(parser)
    return parser


def train_config(argv: Sequence[str]) -> TrainConfig:
    """The validated TrainConfig of ``crossover-sgd train ARGV`` (ConfigError for bad flags)."""
    return config_from_args(_train_parser().parse_args(list(argv))).validate()


_UNSET = object()


def given_train_flags(argv: Sequence[str]) -> Dict[str, str]:
    """The settings ``crossover-sgd train ARGV`` gives explicitly: their names (``batch_size``) ->
    the flag that sets each (``--batch-size``), whatever alias, abbreviation or ``--flag=value``
    form ARGV used (argparse parses it). ConfigError for bad flags."""
    parser = _train_parser()
    flags = {action.dest: action.option_strings[0]  # the name it is declared with
             for action in parser._actions if action.option_strings}
    parser.set_defaults(**{dest: _UNSET for dest in flags})
    given = vars(parser.parse_args(list(argv)))
    return {dest: flags[dest] for dest, value in given.items() if value is not _UNSET}
