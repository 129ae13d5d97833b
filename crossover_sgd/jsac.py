"""``crossover-sgd jsac``: the original parameter-server research code's command line (the LOSP
paper's code, IEEE JSAC 2020 special issue), mapped onto :class:`TrainConfig`.

Takes the seed's ``main.py`` flags verbatim, so its run lines work by changing only the program
name (``python3 main.py`` -> ``crossover-sgd jsac``); every process is started by hand, rank 0
the parameter server, ranks 1 .. WS-1 the workers, all of them reading the same ``config.json``
from their working directory::

    crossover-sgd jsac --ws 3 --psip 172.16.167.32 --psport 8880 --algorithm LOSP --rank 0   # the server
    crossover-sgd jsac --ws 3 --psip 172.16.167.32 --psport 8880 --algorithm LOSP --rank 1   # a worker
    crossover-sgd jsac --ws 3 --psip 172.16.167.32 --psport 8880 --algorithm LOSP --rank 2   # a worker

Each process is one rank of ``crossover-sgd train --algorithm localsgd|osp|losp|dqlosp
--ps-shards 1`` (rank 0: server shard 0, which also hosts the rendezvous at --psip:--psport; the
others: workers, each on its own shard of the training set). The process sets the launcher
variables itself (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK 0``,
``LOCAL_WORLD_SIZE 1``: one process per machine as far as placement goes) and prints nothing
beyond what a rank of ``crossover-sgd train`` prints.

Flags (original -> here):

=========================  =====================================================================
flag                       here
=========================  =====================================================================
--ws N                     the world size: the server and N-1 workers (N >= 2); ``--world_size``
--psip IP, --psport P      the rendezvous (``MASTER_ADDR``, ``MASTER_PORT``): the server's address
--algorithm A              localSGD -> ``localsgd``, OSP -> ``osp``, LOSP -> ``losp``, and the
                           package's DQLOSP -> ``dqlosp`` (any case)
--rank R                   ``RANK``: 0 the server, 1 .. N-1 the workers
--config PATH              not in the original (it read ``config.json`` in the working directory,
                           the default here)
--out DIR                  not in the original (its server appended to a file named in its config):
                           the run directory, ``ps/shard0.csv`` (the server's row per aggregation:
                           global iterations, test loss and accuracy, bytes), ``ps/worker_rank<R>.csv``
                           (a worker's row per push: K, mean train loss, latency), ``summary.json``.
                           Default ``runs/jsac-<algorithm>-<config file's stem>`` (e.g.
                           ``runs/jsac-losp-config``): the same for every process, so that the
                           processes of one machine share it. The server's (rank 0's) --out is the
                           run's: the others follow it, each writing on its own machine. A directory
                           that already holds a run is refused: remove it or give another --out
--data-dir DIR             not in the original: where MNIST / Cifar10 lie (torchvision's layout;
                           never downloaded); overrides ``data_dir`` of config.json
=========================  =====================================================================

config.json (exactly these fields; the first seven are required, as every config.json of the
original had them; another field, a value of the wrong type or out of range: one line naming the
field, the value and what is accepted, exit code 2, nothing written):

=====================  ==========================================================================
field                  here
=====================  ==========================================================================
initial_lr (4e-4)      ``--lr`` (the workers' local SGD) and ``--ps-lr`` (the server's
                       ``x = x - lr * mean(G)``); a number > 0
gamma (6e-4)           ``--losp-gamma`` (LOSP, DQLOSP: ``w = x - gamma * G``; localSGD and OSP
                       ignore it, as the original did); a number >= 0
K (256)                ``--local-steps`` (localSGD: exactly K steps per push; OSP, LOSP, DQLOSP:
                       at most K while the previous push travels); an integer >= 1
batch_size (32)        ``--batch-size`` (per worker); an integer >= 1
all_iterations         the global iterations (the sum of all workers' local steps) -> ``--epochs``:
                       ``ceil(all_iterations / (workers * steps_per_epoch))`` with
                       ``steps_per_epoch = len(train) // (batch_size * workers)`` of the chosen data
                       (each worker trains on its shard; a last partial batch is dropped). Rounded
                       *up* to whole epochs: at least all_iterations are done (the original's server
                       stopped once its count reached all_iterations), at most one epoch more. E.g.
                       the README's 156250 (100 Cifar10 epochs at batch 32) with 8 workers: an
                       epoch is 8 x 195 = 1560 iterations here, so 101 epochs; an integer >= 1
model_type             CNN -> ``--model mnist_cnn``, AlexNet -> ``alexnet_cifar``, ResNet ->
                       ``resnet18`` (CIFAR stem on 32x32 images); case as written
dataset_type           MNIST -> ``--dataset mnist``, Cifar10 -> ``cifar10`` (both need the data
                       directory), and the package's ``digits`` (embedded: a run without files);
                       case as written
bit_width (16)         DQLOSP: ``--quant-bits`` (1 .. 16; the original's Utils.py quantizer had 16)
quant_type             DQLOSP: ``deterministic`` (the nearest level, as the original's
(deterministic)        numpy.digitize) or ``stochastic`` (``--stochastic-rounding True``)
lr_schedule            ``--ps-lr-schedule``: constant, linear or cosine over training progress (the
(constant)             original's ``get_ps_lr(iteration, all_iterations)`` returned initial_lr)
gamma_schedule         ``--losp-gamma-schedule``: the same for gamma (the original's
(constant)             ``get_worker_gamma``)
seed (0)               ``--seed``: the initial model (common to all), the data shards, the shuffling
data_dir               ``--data-dir`` (relative to the working directory), when --data-dir is not given
=====================  ==========================================================================

Not in config.json, as in the original: the workers' local optimizer is plain SGD (``--momentum 0
--weight-decay 0 --lr-schedule constant --warmup-epochs 0``), one server (``--ps-shards 1``), an
evaluation of the server's model after every aggregation (``--ps-eval-every 1``), the device
``auto`` (a GPU where there is one). Values in parentheses: the original's (the first four from
its config.json, the others from its code); they are not defaults, except those of the optional
fields. bit_width and quant_type are accepted with every algorithm (one config.json served them
all) and used by DQLOSP only.

Bad input ends with one line ``crossover-sgd jsac: error: ...`` (settings named by the original's
flags and config fields) and exit code 2.

Layering: this module sits below :mod:`crossover_sgd.cli`, which registers the subcommand
(:func:`add_subparser`) and hands it :func:`crossover_sgd.cli.run_train`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from crossover_sgd.algorithms import make_config
from crossover_sgd.algorithms.ps.records import SCHEDULES
from crossover_sgd.config import TrainConfig
from crossover_sgd.console import OneLineParser, bounded_int, report_errors, suggest_flag
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.launch import LOCAL_LAUNCHER_ENV

__all__ = ["PROG", "ALGORITHM_OF", "MODEL_OF", "DATASET_OF", "FIELDS", "REQUIRED", "JSAC_NAMES", "Translation",
           "build_jsac_parser", "parse", "read_config", "epochs_for", "translate", "add_subparser", "main"]

PROG = "crossover-sgd jsac"

#: --algorithm (any case) -> the package's algorithm.
ALGORITHM_OF = {"localsgd": "localsgd", "osp": "osp", "losp": "losp", "dqlosp": "dqlosp"}
#: How the original spelled them (in messages).
ALGORITHM_NAMES = ("localSGD", "OSP", "LOSP", "DQLOSP")
#: model_type -> --model (case as written, as the original compared them).
MODEL_OF = {"CNN": "mnist_cnn", "AlexNet": "alexnet_cifar", "ResNet": "resnet18"}
#: dataset_type -> --dataset (digits: the package's embedded data, no files).
DATASET_OF = {"MNIST": "mnist", "Cifar10": "cifar10", "digits": "digits"}
QUANT_TYPES = ("deterministic", "stochastic")
#: The original's bit width (its Utils.py quantizer), used when bit_width is absent.
DEFAULT_BIT_WIDTH = 16

#: The fields the original's config.json always had.
REQUIRED = ("initial_lr", "gamma", "K", "batch_size", "all_iterations", "model_type", "dataset_type")
OPTIONAL = ("bit_width", "quant_type", "lr_schedule", "gamma_schedule", "seed", "data_dir")

#: Setting -> how the user wrote it (a flag, or a config.json field): messages name these.
JSAC_NAMES = {
    "world_size": "--ws", "algorithm": "--algorithm", "out": "--out", "data_dir": "--data-dir",
    "lr": "initial_lr", "ps_lr": "initial_lr", "losp_gamma": "gamma", "local_steps": "K", "batch_size": "batch_size",
    "epochs": "all_iterations", "model": "model_type", "dataset": "dataset_type", "quant_bits": "bit_width",
    "stochastic_rounding": "quant_type", "ps_lr_schedule": "lr_schedule", "losp_gamma_schedule": "gamma_schedule",
    "seed": "seed",
}


def _number(minimum: float, strict: bool) -> Tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v > minimum if strict else v >= minimum))
    return ok, f"a number {'>' if strict else '>='} {minimum:g}"


def _integer(minimum: int, maximum: Optional[int] = None) -> Tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= minimum and (maximum is None or v <= maximum)
    return ok, (f"an integer from {minimum} to {maximum}" if maximum is not None else f"an integer >= {minimum}")


def _one_of(choices: Sequence[str], note: str = "") -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and v in choices), f"one of {', '.join(choices)}{note}"


def _path() -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and v.strip() != ""), "a directory path (a non-empty string)"


#: config.json field -> (check, what is accepted, what it is).
FIELDS: Dict[str, Tuple[Callable[[Any], bool], str, str]] = {
    "initial_lr": (*_number(0, strict=True), "the learning rate of the workers and the server"),
    "gamma": (*_number(0, strict=False), "LOSP's compensation step"),
    "K": (*_integer(1), "the most local steps per push"),
    "batch_size": (*_integer(1), "samples per local step"),
    "all_iterations": (*_integer(1), "the global iterations: the sum of all workers' local steps"),
    "model_type": (*_one_of(tuple(MODEL_OF), " (case as written)"), "the model"),
    "dataset_type": (*_one_of(tuple(DATASET_OF), " (case as written)"), "the dataset"),
    "bit_width": (*_integer(1, 16), "DQLOSP's bits per quantized element"),
    "quant_type": (*_one_of(QUANT_TYPES), "DQLOSP's rounding"),
    "lr_schedule": (*_one_of(SCHEDULES), "initial_lr over training progress"),
    "gamma_schedule": (*_one_of(SCHEDULES), "gamma over training progress"),
    "seed": (*_integer(0), "the seed of the initial model, the data shards and the shuffling"),
    "data_dir": (*_path(), "where MNIST or Cifar10 lie"),
}


class JsacParser(OneLineParser):
    """A one-line parser whose errors name ``crossover-sgd jsac``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message}{suggest_flag(self, message)}\n")


def _algorithm(text: str) -> str:
    name = text.strip().lower()
    if name not in ALGORITHM_OF:
        raise argparse.ArgumentTypeError(f"{text!r} is not an algorithm: use one of {', '.join(ALGORITHM_NAMES)} "
                                         "(any case)")
    return ALGORITHM_OF[name]


def _host(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty address: give the server's IP address or host name")
    return text.strip()


def build_jsac_parser() -> argparse.ArgumentParser:
    """The original ``main.py``'s flags, plus --config, --out and --data-dir."""
    p = JsacParser(prog=PROG, description="The original parameter-server code's command line (python3 main.py "
                   "--ws N --psip IP --psport P --algorithm A --rank R), run by crossover-sgd; the rest in "
                   "config.json. See the module crossover_sgd.jsac for how each flag and field maps.")
    p.add_argument("--ws", "--world_size", dest="ws", type=bounded_int("an integer", 2, why="the server and at least one worker"),
                   required=True, help="world size: the server and the workers")
    p.add_argument("--psip", type=_host, required=True, help="the parameter server's (rank 0's) address")
    p.add_argument("--psport", type=bounded_int("a port number", 1, 65535), required=True, help="the parameter server's port (the rendezvous)")
    p.add_argument("--algorithm", type=_algorithm, required=True,
                   help=f"one of {', '.join(ALGORITHM_NAMES)} (any case)")
    p.add_argument("--rank", type=bounded_int("an integer", 0, why="0 the server, 1 .. WS-1 the workers"), required=True,
                   help="0: the server; 1 .. WS-1: the workers")
    p.add_argument("--config", default="config.json", help="the run's settings (default: ./config.json)")
    p.add_argument("--out", default=None, help="run directory (default: runs/jsac-<algorithm>-<config stem>)")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                   help="where MNIST or Cifar10 lie (overrides data_dir of config.json)")
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The flags of ``argv`` (SystemExit 2 with one line for bad syntax)."""
    return build_jsac_parser().parse_args(list(argv))


def read_config(path: str) -> Dict[str, Any]:
    """config.json, checked field by field (ConfigError: one line naming the file and the field)."""
    where = f"--config {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file (the original read config.json from the working directory; "
                          "give --config PATH)") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory, not a config.json file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a JSON object of fields is expected, not {type(raw).__name__}")
    for name in raw:
        if name not in FIELDS:
            close = [f for f in FIELDS if f.lower() == str(name).lower()] or \
                difflib.get_close_matches(name, list(FIELDS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}: unknown field {json.dumps(name)}{hint}: the fields are "
                              f"{', '.join(FIELDS)}")
    missing = [name for name in REQUIRED if name not in raw]
    if missing:
        raise ConfigError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                          f"(required: {', '.join(REQUIRED)})")
    for name, value in raw.items():
        ok, accepted, what = FIELDS[name]
        if not ok(value):
            raise ConfigError(f"{where}: {json.dumps(name)}: {json.dumps(value)} is invalid: use {accepted} "
                              f"({what})")
    return raw


def epochs_for(all_iterations: int, train_length: int, batch_size: int, workers: int) -> int:
    """Whole epochs that make at least ``all_iterations`` global iterations (see the docstring)."""
    steps_per_epoch = train_length // (batch_size * workers)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {batch_size} x {workers} worker(s) exceeds the {train_length} training "
                          "samples: no complete step per epoch; use a smaller batch_size or fewer workers")
    return max(1, math.ceil(all_iterations / (workers * steps_per_epoch)))


def train_length(dataset: str, data_dir: Optional[str]) -> int:
    """The training set's length (read from the files: a subset counts as what it holds)."""
    from crossover_sgd.training.data import build_datasets

    return len(build_datasets(TrainConfig(dataset=dataset, data_dir=data_dir)).train)


@dataclass
class Translation:
    """What an original command line means here: the run's settings and the launcher variables
    this process sets before the process group starts."""

    config: TrainConfig
    env: Dict[str, str] = field(default_factory=dict)


def default_out(algorithm: str, config_path: str) -> str:
    return str(Path("runs") / f"jsac-{algorithm}-{Path(config_path).stem or 'config'}")


def check_out(out: str) -> None:
    """Refuse a --out that holds a run, saying what to do here (a parameter-server run has no
    resume: the generic message's advice would not apply)."""
    from crossover_sgd.training.outputs import RUN_MARKERS

    path = Path(out)
    held = [m for m in RUN_MARKERS if (path / m).exists()] + sorted(p.name for p in path.glob("metrics_rank*.csv"))
    if held:
        raise ConfigError(f"--out {out} already holds a run ({held[0]}): remove it or give another --out "
                          "(a parameter-server run cannot be resumed)")


def translate(args: argparse.Namespace, fields: Dict[str, Any], length: Optional[int] = None) -> Translation:
    """Map the flags and config.json's (checked) ``fields`` onto a TrainConfig and launcher
    variables. ``length``: the training set's length (None: read the data). ConfigError for what
    cannot be honoured."""
    if args.rank >= args.ws:
        raise ConfigError(f"--rank {args.rank} is invalid: use 0 (the server) to {args.ws - 1} (--ws {args.ws}: "
                          f"ranks 0 .. {args.ws - 1})")
    algorithm = args.algorithm
    dataset = DATASET_OF[fields["dataset_type"]]
    data_dir = args.data_dir if args.data_dir is not None else fields.get("data_dir")
    if dataset == "digits":
        data_dir = None
    elif data_dir is None:
        raise ConfigError(f"dataset_type {fields['dataset_type']} reads files: give --data-dir DIR (or \"data_dir\" "
                          "in config.json); crossover-sgd never downloads data")
    workers = args.ws - 1
    if length is None:
        length = train_length(dataset, data_dir)
    epochs = epochs_for(fields["all_iterations"], length, fields["batch_size"], workers)
    lr = float(fields["initial_lr"])
    values: Dict[str, Any] = dict(
        algorithm=algorithm, dataset=dataset, data_dir=data_dir, model=MODEL_OF[fields["model_type"]],
        batch_size=fields["batch_size"], epochs=epochs, lr=lr, momentum=0.0, weight_decay=0.0, nesterov=False,
        lr_schedule="constant", warmup_epochs=0.0, seed=fields.get("seed", 0), world_size=args.ws,
        out=args.out if args.out is not None else default_out(algorithm, args.config),
        ps_shards=1, local_steps=fields["K"], ps_lr=lr, ps_lr_schedule=fields.get("lr_schedule", "constant"),
        ps_eval_every=1)
    if algorithm in ("losp", "dqlosp"):
        values.update(losp_gamma=float(fields["gamma"]),
                      losp_gamma_schedule=fields.get("gamma_schedule", "constant"))
    if algorithm == "dqlosp":
        values.update(quant_bits=fields.get("bit_width", DEFAULT_BIT_WIDTH),
                      stochastic_rounding=fields.get("quant_type", "deterministic") == "stochastic")
    env = {"RANK": str(args.rank), "WORLD_SIZE": str(args.ws), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
           "GROUP_RANK": str(args.rank), "MASTER_ADDR": args.psip, "MASTER_PORT": str(args.psport),
           LOCAL_LAUNCHER_ENV: "hosts"}
    return Translation(make_config(**values), env)


def main(argv: Sequence[str], train: Callable[..., int]) -> int:
    """Run ``crossover-sgd jsac ARGV``; ``train`` is :func:`crossover_sgd.cli.run_train` (handed
    in by the command line, which sits above this module)."""
    argv = list(argv)
    args = parse(argv)  # bad syntax: one line, exit 2
    command = [sys.executable, "-m", "crossover_sgd", "jsac", *argv]

    def action() -> int:
        fields = read_config(args.config)
        translation = translate(args, fields)
        translation.config.validate()
        check_out(str(translation.config.out))
        os.environ.update(translation.env)  # this process is rank --rank of --ws, started by hand
        return train(translation.config, command, flag_names=JSAC_NAMES)

    return report_errors(action, PROG, JSAC_NAMES)


def add_subparser(subparsers, train: Callable[..., int]) -> argparse.ArgumentParser:
    """Register ``jsac`` on the ``crossover-sgd`` subcommands. The words after ``jsac`` are parsed
    by :func:`build_jsac_parser` (errors as ``crossover-sgd jsac: error``): the subcommand only
    collects them (its prefix character is one no argument can start with)."""
    parser = subparsers.add_parser("jsac", help="run the original parameter-server code's command line "
                                   "(python3 main.py --ws N --psip IP --psport P --algorithm A --rank R)",
                                   add_help=False, prefix_chars="\0",
                                   usage=f"{PROG} --ws N --psip IP --psport P --algorithm A --rank R [--config PATH] "
                                         "[--out DIR] [--data-dir DIR]")
    parser.add_argument("words", nargs="*")
    parser.set_defaults(handler=lambda args: main(args.words, train))
    return parser
