"""The original job scripts' interface (``imagenet_test.py``), mapped onto :class:`TrainConfig`.

Accepts the flags of the study's sbatch scripts unchanged, string booleans included::

    imagenet_test.py --batch_size 128 --world_size 32 --crossover True --tag $SLURM_JOBID \\
        --lars True --allreduce False --amp True --lrdecay poly --lars_coef 0.0025 --baselr 11 \\
        --warmup_epoch 36 --local_itr 21 --clip_grad True --sync_grad False \\
        --sync_lars_start_epoch 200 --sync_lars_group_size 8 --chromosome fine --maxepoch 90 \\
        --manual_seed 776 --gpu_per_node 2 --data /path/to/imagenet

Algorithm as in the original: ``--allreduce True`` is AllReduce-SGD, ``--crossover True`` is
Crossover-SGD (``--groupnum G``: hierarchical), neither is SGP. ``--lars True`` uses the study's
LARS (momentum 0.96 unless ``--momentum`` is given; weight decay scaled by the poly factor);
``--amp True`` is fp16 with a GradScaler (GPU only; ``--amp bf16`` also runs on the CPU).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from crossover_sgd.algorithms import make_config
from crossover_sgd.cli import run_train
from crossover_sgd.config import TrainConfig
from crossover_sgd.console import OneLineParser, report_errors, str_bool
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.local_launcher import claim_error_channel

__all__ = ["build_legacy_parser", "legacy_config", "main"]

PROG = "imagenet_test.py"
#: The study's fixed choices (see docs): label smoothing 0.1, gradient-norm clip 1000, wd 5e-5.
STUDY_LABEL_SMOOTHING, STUDY_CLIP_NORM, STUDY_WEIGHT_DECAY, STUDY_LARS_MOMENTUM = 0.1, 1000.0, 5e-5, 0.96


def amp_mode(text: str) -> str:
    """``--amp``: the original True/False (True: fp16, as apex's O1/O2 was), or fp16/bf16/off."""
    if text.lower() in ("fp16", "bf16", "off"):
        return text.lower()
    return "fp16" if str_bool(text) else "off"


#: Setting -> the original script's flag for it (messages name the flags its users typed).
LEGACY_NAMES = {"batch_size": "--batch_size", "local_itr": "--local_itr",
                "epochs": "--maxepoch", "lr": "--baselr", "lr_schedule": "--lrdecay",
                "warmup_epochs": "--warmup_epoch", "data_dir": "--data", "seed": "--manual_seed",
                "eval_every": "--eval_every", "weight_decay": "--weight_decay", "sync_grad": "--sync_grad",
                "lars_coef": "--lars_coef", "sync_lars_group_size": "--sync_lars_group_size",
                "sync_lars_start_epoch": "--sync_lars_start_epoch"}


def build_legacy_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="The original Crossover-SGD training script's flags.")
    p.add_argument("--batch_size", type=int, default=128, help="per-GPU micro-batch")
    p.add_argument("--world_size", type=int, default=None, help="checked against the launcher")
    p.add_argument("--crossover", type=str_bool, default=False, metavar="BOOL")
    p.add_argument("--allreduce", type=str_bool, default=False, metavar="BOOL")
    p.add_argument("--sync_grad", type=str_bool, default=None, metavar="BOOL",
                   help="average gradients before the step (default True for allreduce)")
    p.add_argument("--tag", default=None, help="run name (e.g. $SLURM_JOBID)")
    p.add_argument("--lars", type=str_bool, default=False, metavar="BOOL")
    p.add_argument("--amp", type=amp_mode, default="off", metavar="BOOL|fp16|bf16",
                   help="True: fp16 with GradScaler (GPU); bf16 also works on the CPU")
    p.add_argument("--lrdecay", default="poly", choices=("poly", "step", "cosine", "constant"))
    p.add_argument("--lars_coef", type=float, default=0.0025, help="LARS eta (trust coefficient)")
    p.add_argument("--baselr", type=float, default=0.1, help="peak learning rate")
    p.add_argument("--warmup_epoch", type=float, default=5.0)
    p.add_argument("--local_itr", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--clip_grad", type=str_bool, default=False, metavar="BOOL",
                   help=f"clip the gradient norm at {STUDY_CLIP_NORM:g}")
    p.add_argument("--sync_lars_start_epoch", type=int, default=0,
                   help="from this epoch on, LARS norms are of the sum over --sync_lars_group_size ranks")
    p.add_argument("--sync_lars_group_size", type=int, default=None)
    p.add_argument("--chromosome", default=None, help="coarse or fine (Crossover-SGD segments)")
    p.add_argument("--groupnum", type=int, default=None, help="hierarchical crossover: number of groups")
    p.add_argument("--maxepoch", type=int, default=90)
    p.add_argument("--manual_seed", type=int, default=0)
    p.add_argument("--gpu_per_node", type=int, default=None)
    p.add_argument("--momentum", type=float, default=None, help=f"default {STUDY_LARS_MOMENTUM} with LARS, else 0.9")
    p.add_argument("--weight_decay", type=float, default=STUDY_WEIGHT_DECAY)
    # additions: where the data is, what to train, where to write, how to launch
    p.add_argument("--data", "--data_dir", dest="data_dir", default=None,
                   help="ImageNet-style folder with train/ and val/ (required for --dataset imagenet)")
    p.add_argument("--dataset", default="imagenet", help="imagenet (default), cifar10, mnist, digits, synthetic")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--out", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading workers per rank (default: up to 4, what the machine's cores allow "
                        "beside its ranks)")
    p.add_argument("--nproc", type=int, default=None, help="start N local ranks")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--eval_every", type=int, default=1)
    return p


def legacy_config(args: argparse.Namespace) -> TrainConfig:
    """Translate the original flags into a TrainConfig (ConfigError for contradictions)."""
    if args.crossover and args.allreduce:
        raise ConfigError("--crossover True and --allreduce True contradict each other: set at most one")
    algorithm = "crossover" if args.crossover else "allreduce" if args.allreduce else "sgp"
    if args.groupnum is not None:
        if algorithm != "crossover":
            raise ConfigError(f"--groupnum {args.groupnum} applies to Crossover-SGD only: add --crossover True")
        algorithm = "hierarchical-crossover"
    return make_config(
        algorithm=algorithm, sync_grad=True if args.sync_grad is None else args.sync_grad,
        chromosome=args.chromosome or "fine", groupnum=args.groupnum,
        dataset=args.dataset, data_dir=args.data_dir, model=args.model, workers=args.workers,
        batch_size=args.batch_size, local_itr=args.local_itr, epochs=args.maxepoch, lr=args.baselr,
        momentum=(STUDY_LARS_MOMENTUM if args.lars else 0.9) if args.momentum is None else args.momentum,
        weight_decay=args.weight_decay, label_smoothing=STUDY_LABEL_SMOOTHING,
        clip_grad_norm=STUDY_CLIP_NORM if args.clip_grad else 0.0, lr_schedule=args.lrdecay,
        warmup_epochs=args.warmup_epoch, lars=args.lars, lars_coef=args.lars_coef, amp=args.amp,
        wd_schedule=args.lrdecay == "poly" and args.lars,
        sync_lars_group_size=args.sync_lars_group_size, sync_lars_start_epoch=args.sync_lars_start_epoch,
        eval_every=args.eval_every, out=args.out, tag=args.tag, resume=args.resume, seed=args.manual_seed,
        nproc=args.nproc, world_size=args.world_size, gpu_per_node=args.gpu_per_node, backend=args.backend,
        device=args.device, timeout=args.timeout)


def main(argv: Optional[Sequence[str]] = None, script: Optional[str] = None) -> int:
    """Entry point of ``imagenet_test.py``; ``script`` is the path ``--nproc`` re-runs."""
    claim_error_channel()  # in a rank of --nproc N: before anything starts another process
    argv: List[str] = list(sys.argv[1:] if argv is None else argv)
    command = [sys.executable, script or sys.argv[0]] + argv
    args = build_legacy_parser().parse_args(argv)
    return report_errors(lambda: run_train(legacy_config(args), command, flag_names=LEGACY_NAMES),
                         PROG, LEGACY_NAMES)
