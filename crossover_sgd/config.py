"""The configuration of one training run, and its validation.

Both entry points (``crossover-sgd train`` and the legacy ``imagenet_test.py``) build a
:class:`TrainConfig`; everything after that is shared.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

from crossover_sgd.errors import ConfigError

__all__ = ["TrainConfig", "DATASETS", "MODELS", "LR_SCHEDULES", "AMP_MODES", "LOG_LEVELS", "parse_bool",
           "rename_flags"]

DATASETS = ("digits", "imagefolder", "imagenet", "cifar10", "mnist", "synthetic")
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2")
MODELS = ("small_cnn",) + RESNETS
LR_SCHEDULES = ("constant", "step", "cosine", "poly")
#: The accepted values of --amp, --lars-momentum-form and --log-level (each one implemented and tested).
AMP_MODES = ("off", "fp16", "bf16")
LARS_MOMENTUM_FORMS = ("mxnet", "pytorch")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_bool(text: str) -> bool:
    """The original scripts' string booleans: ``True`` or ``False`` (any case), nothing else."""
    value = str(text).strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"{text!r} is not a boolean: use True or False")


@dataclass
class TrainConfig:
    """All settings of a training run. Units: epochs, optimizer steps, seconds."""

    # algorithm
    algorithm: str = "allreduce"
    sync_grad: bool = True
    chromosome: str = "fine"
    segments: Optional[int] = None
    fair: bool = True
    segmented: bool = True
    groupnum: Optional[int] = None
    sgp_peers: int = 1
    gossip_overlap: bool = False
    gossip_buffers: bool = False
    gossip_momentum: bool = False
    gossip_dtype: str = "model"
    # data and model
    dataset: str = "digits"
    data_dir: Optional[str] = None
    model: str = "small_cnn"
    image_size: Optional[int] = None
    synthetic_samples: int = 2048
    synthetic_classes: int = 10
    workers: int = 0
    # optimisation
    batch_size: int = 32
    local_itr: int = 1
    epochs: int = 20
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    clip_grad_norm: float = 0.0
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    poly_power: float = 2.2
    poly_end: float = 0.0025
    poly_hold_epochs: int = 2
    step_milestones: Tuple[int, ...] = (30, 60, 80)
    step_gamma: float = 0.1
    wd_schedule: bool = False
    # LARS and mixed precision
    lars: bool = False
    lars_coef: float = 0.0025
    lars_momentum_form: str = "mxnet"
    lars_momentum_correction: bool = False
    lars_trust_clip: Optional[float] = None
    sync_lars_group_size: Optional[int] = None
    sync_lars_start_epoch: int = 0
    amp: str = "off"
    channels_last: bool = False
    skip_nonfinite: bool = True
    # evaluation, outputs, resume
    eval_every: int = 1
    checkpoint_every: int = 1
    stop_at_step: Optional[int] = None
    out: Optional[str] = None
    tag: Optional[str] = None
    resume: bool = False
    seed: int = 0
    log_level: str = "INFO"
    tensorboard: bool = False
    # runtime
    nproc: Optional[int] = None
    world_size: Optional[int] = None
    gpu_per_node: Optional[int] = None
    backend: str = "auto"
    device: str = "auto"
    timeout: float = 300.0

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["step_milestones"] = list(self.step_milestones)
        return data

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    def validate(self) -> "TrainConfig":
        """Check every value that can be checked without touching files; raise ConfigError."""
        from crossover_sgd.algorithms import ALGORITHMS
        from crossover_sgd.comm.segments import CHROMOSOMES

        _choice("--algorithm", self.algorithm, tuple(ALGORITHMS))
        _choice("--chromosome", self.chromosome, CHROMOSOMES)
        _choice("--gossip-dtype", self.gossip_dtype, ("model", "fp32", "fp16", "bf16"))
        if self.segments is not None:
            _at_least("--segments", self.segments, 1)
        _at_least("--sgp-peers", self.sgp_peers, 1)
        if self.gossip_overlap and self.algorithm not in ("sgp", "crossover"):
            raise ConfigError(f"--gossip-overlap True is available for --algorithm sgp and crossover, "
                              f"not {self.algorithm}")
        if self.groupnum is not None:
            _at_least("--groupnum", self.groupnum, 1)
            self._check_divides_world("--groupnum", self.groupnum)
        _choice("--dataset", self.dataset, DATASETS)
        _choice("--model", self.model, MODELS)
        _choice("--lr-schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("--backend", self.backend, ("auto", "nccl", "gloo"))
        _choice("--device", self.device, ("auto", "cpu", "cuda"))
        _choice("--amp", self.amp, AMP_MODES)
        _choice("--lars-momentum-form", self.lars_momentum_form, LARS_MOMENTUM_FORMS)
        if not (math.isfinite(self.lars_coef) and self.lars_coef > 0):
            raise ConfigError(f"--lars-coef {self.lars_coef} is invalid: use a finite number > 0 (the study: 0.0025)")
        if self.lars_trust_clip is not None and not self.lars_trust_clip > 0:
            raise ConfigError(f"--lars-trust-clip {self.lars_trust_clip} is invalid: use a number > 0")
        if self.sync_lars_group_size is not None:
            if not self.lars:
                raise ConfigError("--sync-lars-group-size needs --lars True (it synchronises LARS norms)")
            _at_least("--sync-lars-group-size", self.sync_lars_group_size, 1)
            self._check_divides_world("--sync-lars-group-size", self.sync_lars_group_size)
        _at_least("--sync-lars-start-epoch", self.sync_lars_start_epoch, 0)
        if self.momentum >= 1:
            raise ConfigError(f"--momentum {self.momentum} is invalid: use 0 <= momentum < 1")
        _at_least("--batch-size", self.batch_size, 1)
        _at_least("--local-itr", self.local_itr, 1)
        _at_least("--epochs", self.epochs, 1)
        _at_least("--eval-every", self.eval_every, 1)
        _at_least("--checkpoint-every", self.checkpoint_every, 1)
        _at_least("--workers", self.workers, 0)
        _at_least("--synthetic-samples", self.synthetic_samples, 1)
        _at_least("--synthetic-classes", self.synthetic_classes, 2)
        for flag, value in (("--lr", self.lr), ("--momentum", self.momentum),
                            ("--weight-decay", self.weight_decay), ("--clip-grad-norm", self.clip_grad_norm),
                            ("--warmup-epochs", self.warmup_epochs), ("--poly-power", self.poly_power),
                            ("--step-gamma", self.step_gamma)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{flag} {value} is invalid: use a finite number >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing {self.label_smoothing} is invalid: use 0 <= value < 1")
        if not 0 <= self.poly_end <= 1:
            raise ConfigError(f"--poly-end {self.poly_end} is invalid: use 0 <= value <= 1")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("--nesterov needs a momentum > 0")
        hold = self.poly_hold_epochs if self.lr_schedule == "poly" else 0
        if self.warmup_epochs + hold >= self.epochs and self.warmup_epochs > 0:
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs:g} (+ {hold} held epochs) is not shorter "
                              f"than training ({self.epochs} epochs): use fewer warmup epochs")
        if self.image_size is not None:
            _at_least("--image-size", self.image_size, 8)
        if self.timeout <= 0:
            raise ConfigError(f"--timeout {self.timeout} is invalid: use a number of seconds > 0")
        if self.nproc is not None:
            _at_least("--nproc", self.nproc, 1)
            if self.world_size is not None and self.world_size != self.nproc:
                raise ConfigError(f"--world_size {self.world_size} disagrees with --nproc {self.nproc}")
        if self.world_size is not None:
            _at_least("--world_size", self.world_size, 1)
        if self.gpu_per_node is not None:
            _at_least("--gpu_per_node", self.gpu_per_node, 1)
            self._check_divides_world("--gpu_per_node", self.gpu_per_node)
        if self.stop_at_step is not None:
            _at_least("--stop-at-step", self.stop_at_step, 1)
        if self.dataset in ("imagefolder", "imagenet", "cifar10", "mnist") and not self.data_dir:
            raise ConfigError(f"--dataset {self.dataset} needs --data-dir DIR (data is never downloaded)")
        if str(self.log_level).upper() not in LOG_LEVELS:
            raise ConfigError(f"--log-level {self.log_level!r} is unknown: choose one of {', '.join(LOG_LEVELS)}")
        return self

    def ineffective_options(self) -> List[str]:
        """The options set to a non-default value that this run does not use, each with why:
        ``["--sync-grad False (only allreduce uses it; the algorithm is crossover)", ...]``.

        Job scripts pass every flag to every algorithm, so these are not refused; rank 0 warns
        about them once before training. Call on a validated configuration.
        """
        from crossover_sgd.algorithms import ALGORITHMS

        cls = ALGORITHMS[self.algorithm]
        users = {name: [a.name for a in ALGORITHMS.values() if name in a.options]
                 for a in ALGORITHMS.values() for name in a.options}
        sched = f"the schedule is {self.lr_schedule}"
        synthetic_or_folder = self.dataset in ("synthetic", "imagefolder", "imagenet")
        # field: (used in this run, why not); algorithm options: what each Algorithm declares
        rules: Dict[str, Tuple[bool, str]] = {
            name: (name in cls.options, f"only {', '.join(algos)} use{'s' if len(algos) == 1 else ''} it; "
                                        f"the algorithm is {self.algorithm}")
            for name, algos in users.items()}
        if "chromosome" in cls.options and self.segments is not None:
            rules["chromosome"] = (False, "--segments replaces it")
        rules.update({
            "poly_power": (self.lr_schedule == "poly", f"only the poly schedule uses it; {sched}"),
            "poly_end": (self.lr_schedule == "poly", f"only the poly schedule uses it; {sched}"),
            "poly_hold_epochs": (self.lr_schedule == "poly", f"only the poly schedule uses it; {sched}"),
            "step_milestones": (self.lr_schedule == "step", f"only the step schedule uses it; {sched}"),
            "step_gamma": (self.lr_schedule == "step", f"only the step schedule uses it; {sched}"),
            "lars_coef": (self.lars, "only LARS uses it; --lars is False"),
            "lars_momentum_form": (self.lars, "only LARS uses it; --lars is False"),
            "lars_momentum_correction": (self.lars, "only LARS uses it; --lars is False"),
            "lars_trust_clip": (self.lars, "only LARS uses it; --lars is False"),
            "sync_lars_start_epoch": (self.lars and self.sync_lars_group_size is not None,
                                      "only --sync-lars-group-size uses it" if self.lars
                                      else "only LARS uses it; --lars is False"),
            "synthetic_samples": (self.dataset == "synthetic", f"only --dataset synthetic uses it, not {self.dataset}"),
            "synthetic_classes": (self.dataset == "synthetic", f"only --dataset synthetic uses it, not {self.dataset}"),
            "image_size": (synthetic_or_folder, f"--dataset {self.dataset} has a fixed image size"),
            "data_dir": (self.dataset not in ("digits", "synthetic"), f"--dataset {self.dataset} reads no files"),
        })
        defaults = TrainConfig()
        found = []
        for name in (f.name for f in fields(self) if f.name in rules):  # in the fields' order
            used, why = rules[name]
            value = getattr(self, name)
            if used or _same(value, getattr(defaults, name)):
                continue
            found.append(f"--{name.replace('_', '-')} {_show(value)} ({why})")
        return found

    def _check_divides_world(self, flag: str, value: int) -> None:
        """``value`` must divide the world size, where it is known before launch."""
        known = self.nproc or self.world_size
        if known is not None and known % value:
            raise divides_world_error(flag, value, known)


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        return tuple(value) == default
    return value == default


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def rename_flags(text: str, names: Optional[Dict[str, str]]) -> str:
    """``text`` with each flag ``new`` of ``names`` written as ``names[new]`` (the legacy script's
    users know ``--batch_size``, not ``--batch-size``); a flag that merely starts with ``new``
    is left alone."""
    for new, old in (names or {}).items():
        text = re.sub(rf"{re.escape(new)}(?![\w-])", old, text)
    return text


def divides_world_error(flag: str, value: int, world_size: int) -> ConfigError:
    return ConfigError(f"{flag} {value} does not divide the world size {world_size}: use a divisor of {world_size}")


def _choice(flag: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r} is unknown: choose one of {', '.join(choices)}")


def _at_least(flag: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{flag} {value} is invalid: use an integer >= {low}")
