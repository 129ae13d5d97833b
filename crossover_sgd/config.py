"""The generic configuration of one training run, and its validation.

Both entry points (``crossover-sgd train`` and the legacy ``imagenet_test.py``) build a
:class:`TrainConfig`; everything after that is shared. The options of the algorithms live with
the algorithms (:mod:`crossover_sgd.algorithms.options`); a TrainConfig holds their values in
``options`` (built by :func:`crossover_sgd.algorithms.make_config` or the command line) and reads
them as attributes (``config.sync_grad``). This module imports no algorithm.

Errors name settings as ``{field}`` placeholders; the entry point renders them as its flags
(:mod:`crossover_sgd.errors`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Protocol, Tuple, Union

from crossover_sgd.errors import ConfigError, divides_world_error, render_fields

__all__ = ["TrainConfig", "AlgorithmSettings", "DATASETS", "MODELS", "DTYPES", "LR_SCHEDULES", "AMP_MODES",
           "LOG_LEVELS", "PARTITIONS", "NORMS", "SIGNAL_DATASETS", "SIGNAL_MODELS", "default_model", "group_count"]

DATASETS = ("digits", "mnist1d", "imagefolder", "imagenet", "cifar10", "mnist", "synthetic")
#: Data sets of 1-D signals (samples of shape (1, length)), and the models that take them.
SIGNAL_DATASETS = ("mnist1d",)
SIGNAL_MODELS = ("cnn1d", "logistic")
#: MNIST-1D (``--dataset mnist1d``): its samples are generated in equal numbers per digit, 80 %
#: for training; ``--mnist1d-samples`` is a multiple of the classes, with at least this many.
MNIST1D_CLASSES, MNIST1D_MIN_SAMPLES = 10, 100
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2")
#: Models with fixed dropouts (or none) and no normalisation: --drop-rate, --last-drop-rate and
#: --norm group are refused with them (the reason is shown in the message).
FIXED_MODELS = {"logistic": "a single linear layer, no dropout",
                "cnn1d": "the MNIST-1D paper's CNN, no dropout",
                "mnist_cnn": "the PyTorch MNIST example's CNN, its dropouts fixed at 0.25 and 0.5",
                "alexnet_cifar": "AlexNet for CIFAR-10, its dropouts fixed at 0.5"}
MODELS = ("small_cnn", "cnn1d", "logistic", "mnist_cnn", "alexnet_cifar") + RESNETS
#: The models that take images (4-D batches): all but cnn1d.
MODELS_2D = tuple(m for m in MODELS if m != "cnn1d")
#: The channel counts of every normalisation layer of the RESNETS (64 * 2^k): checked against --group-channels.
RESNET_CHANNELS = tuple(64 * 2 ** k for k in range(6))
#: The accepted values of --norm (ResNets only) and of --partition (how the training set is split over trainers).
NORMS = ("batch", "group")
PARTITIONS = ("shard", "iid", "noniid", "dirichlet")
#: The accepted values of --dtype: the dtype of the model's parameters and of its (floating) inputs.
#: float64 is for checks of an algorithm's math (equivalences then hold to float64 rounding).
DTYPES = ("float32", "float64")
LR_SCHEDULES = ("constant", "step", "cosine", "poly")
#: The accepted values of --amp, --lars-momentum-form and --log-level (each one implemented and tested).
AMP_MODES = ("off", "fp16", "bf16")
LARS_MOMENTUM_FORMS = ("mxnet", "pytorch")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class AlgorithmSettings(Protocol):
    """What a TrainConfig asks of its algorithm options (implemented by
    :class:`crossover_sgd.algorithms.registry.OptionValues`)."""

    values: Dict[str, Any]

    def as_dict(self) -> Dict[str, Any]: ...

    def check(self, algorithm: str, world_size: Optional[int]) -> None: ...

    def unused(self, algorithm: str) -> List[str]: ...


@dataclass
class TrainConfig:
    """All generic settings of a training run. Units: epochs, optimizer steps, seconds."""

    # algorithm: its name; its options' values (None: the algorithm's defaults)
    algorithm: str = "allreduce"
    options: Optional[AlgorithmSettings] = field(default=None, compare=True)
    # data and model
    dataset: str = "digits"
    data_dir: Optional[str] = None  # mnist1d: where its generated arrays are cached
    model: Optional[str] = None  # None: default_model(dataset), set on construction
    dtype: str = "float32"  # the parameters' and the inputs' dtype (DTYPES)
    image_size: Optional[int] = None
    synthetic_samples: int = 2048
    synthetic_classes: int = 10
    mnist1d_samples: int = 10000  # train + validation (80 % / 20 %)
    mnist1d_seed: int = 42  # the generator's seed (the mnist1d package's default), not the run's --seed
    workers: Optional[int] = 0  # None: what the machine has (training.data.default_workers)
    partition: str = "shard"  # PARTITIONS; other than shard: training.partition
    dirichlet_alpha: float = 0.5
    train_data_length: Optional[int] = None  # a cap on each node's training samples (None: its whole part)
    local_val_fraction: float = 0.1
    norm: str = "batch"  # NORMS: BatchNorm2d, or GroupNorm(ceil(C / group_channels), C)
    group_channels: int = 32
    drop_rate: float = 0.0  # Dropout2d after the stem and each stage but the last
    last_drop_rate: float = 0.0  # Dropout before the classifier
    # optimisation
    batch_size: int = 32
    local_itr: int = 1
    epochs: int = 20
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    l2_lambda: float = 0.0  # the loss gains l2_lambda / 2 * ||w||^2
    clip_grad_norm: float = 0.0
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    poly_power: float = 2.2
    poly_end: float = 0.0025
    poly_hold_epochs: int = 2
    step_milestones: Tuple[int, ...] = (30, 60, 80)
    step_gamma: float = 0.1
    step_size: Optional[int] = None  # step schedule: gamma ** (step // step_size) instead of the milestones
    gamma: float = 0.9
    wd_schedule: bool = False
    # LARS and mixed precision
    lars: bool = False
    lars_coef: float = 0.0025
    lars_momentum_form: str = "mxnet"
    lars_momentum_correction: bool = False
    lars_trust_clip: Union[float, str, None] = None  # "larc" (LARC clipping) or a trust-ratio cap
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
    emulate_nodes: Optional[int] = None  # checked with link_rate by the local launcher (runtime.emulation)
    link_rate: Optional[str] = None
    world_size: Optional[int] = None
    gpu_per_node: Optional[int] = None
    backend: str = "auto"
    device: str = "auto"
    timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = default_model(self.dataset)

    def __getattr__(self, name: str) -> Any:
        """An algorithm option's value (``config.sync_grad``), read from ``options``."""
        options = self.__dict__.get("options")
        if options is not None and name in options.values:
            return options.values[name]
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def to_dict(self) -> Dict[str, Any]:
        """Every setting by name (algorithm options flattened in after ``algorithm``)."""
        data = asdict(replace(self, options=None))
        data.pop("options")
        data["step_milestones"] = list(self.step_milestones)
        algorithm_options = self.options.as_dict() if self.options is not None else {}
        return {"algorithm": data.pop("algorithm"), **algorithm_options, **data}

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    def validate(self) -> "TrainConfig":
        """Check every value that can be checked without touching files; raise ConfigError."""
        if self.options is not None:
            self.options.check(self.algorithm, self.nproc or self.world_size)
        _choice("dataset", self.dataset, DATASETS)
        _choice("model", self.model, MODELS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("backend", self.backend, ("auto", "nccl", "gloo"))
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _choice("amp", self.amp, AMP_MODES)
        _choice("dtype", self.dtype, DTYPES)
        if self.dtype == "float64" and self.amp != "off":
            raise ConfigError(f"{{amp}} {self.amp} computes in half precision, which defeats {{dtype}} float64: "
                              "use {amp} off with float64, or {dtype} float32 with mixed precision")
        self._check_data_split()
        self._check_signals()
        self._check_model_settings()
        _choice("lars_momentum_form", self.lars_momentum_form, LARS_MOMENTUM_FORMS)
        if not (math.isfinite(self.lars_coef) and self.lars_coef > 0):
            raise ConfigError(f"{{lars_coef}} {self.lars_coef} is invalid: use a finite number > 0 (the study: 0.0025)")
        clip = self.lars_trust_clip
        is_number = isinstance(clip, (int, float)) and not isinstance(clip, bool)
        if clip is not None and clip != "larc" and not (is_number and math.isfinite(clip) and clip > 0):
            raise ConfigError(f"{{lars_trust_clip}} {clip!r} is invalid: use larc (LARC clipping) "
                              "or a finite number > 0 (a cap on the trust ratio)")
        if self.sync_lars_group_size is not None:
            if not self.lars:
                raise ConfigError("{sync_lars_group_size} needs {lars} True (it synchronises LARS norms)")
            _at_least("sync_lars_group_size", self.sync_lars_group_size, 1)
            self._check_divides_world("sync_lars_group_size", self.sync_lars_group_size)
        _at_least("sync_lars_start_epoch", self.sync_lars_start_epoch, 0)
        if self.momentum >= 1:
            raise ConfigError(f"{{momentum}} {self.momentum} is invalid: use 0 <= momentum < 1")
        for name in ("batch_size", "local_itr", "epochs", "eval_every", "checkpoint_every", "synthetic_samples"):
            _at_least(name, getattr(self, name), 1)
        if self.workers is not None:
            _at_least("workers", self.workers, 0)
        _at_least("synthetic_classes", self.synthetic_classes, 2)
        for name in ("lr", "momentum", "weight_decay", "l2_lambda", "clip_grad_norm", "warmup_epochs", "poly_power",
                     "step_gamma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{{{name}}} {value} is invalid: use a finite number >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{{label_smoothing}} {self.label_smoothing} is invalid: use 0 <= value < 1")
        if self.step_size is not None:
            _at_least("step_size", self.step_size, 1)
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"{{gamma}} {self.gamma} is invalid: use 0 < value <= 1")
        if not 0 <= self.poly_end <= 1:
            raise ConfigError(f"{{poly_end}} {self.poly_end} is invalid: use 0 <= value <= 1")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("{nesterov} needs a momentum > 0")
        hold = self.poly_hold_epochs if self.lr_schedule == "poly" else 0
        if self.warmup_epochs + hold >= self.epochs and self.warmup_epochs > 0:
            raise ConfigError(f"{{warmup_epochs}} {self.warmup_epochs:g} (+ {hold} held epochs) is not shorter "
                              f"than training ({self.epochs} epochs): use fewer warmup epochs")
        if self.image_size is not None:
            _at_least("image_size", self.image_size, 8)
        if self.timeout <= 0:
            raise ConfigError(f"{{timeout}} {self.timeout} is invalid: use a number of seconds > 0")
        if self.nproc is not None:
            _at_least("nproc", self.nproc, 1)
            if self.world_size is not None and self.world_size != self.nproc:
                raise ConfigError(f"{{world_size}} {self.world_size} disagrees with {{nproc}} {self.nproc}")
        if self.world_size is not None:
            _at_least("world_size", self.world_size, 1)
        if self.gpu_per_node is not None:
            _at_least("gpu_per_node", self.gpu_per_node, 1)
            self._check_divides_world("gpu_per_node", self.gpu_per_node)
        if self.stop_at_step is not None:
            _at_least("stop_at_step", self.stop_at_step, 1)
        if self.dataset in ("imagefolder", "imagenet", "cifar10", "mnist") and not self.data_dir:
            raise ConfigError(f"{{dataset}} {self.dataset} needs {{data_dir}} DIR (data is never downloaded)")
        if str(self.log_level).upper() not in LOG_LEVELS:
            raise ConfigError(f"{{log_level}} {self.log_level!r} is unknown: choose one of {', '.join(LOG_LEVELS)}")
        return self

    def _check_data_split(self) -> None:
        """The settings of :mod:`crossover_sgd.training.partition`."""
        _choice("partition", self.partition, PARTITIONS)
        if not (math.isfinite(self.dirichlet_alpha) and self.dirichlet_alpha > 0):
            raise ConfigError(f"{{dirichlet_alpha}} {self.dirichlet_alpha} is invalid: use a finite number > 0")
        if self.train_data_length is not None:
            _at_least("train_data_length", self.train_data_length, 1)
        if not 0 <= self.local_val_fraction <= 0.5:
            raise ConfigError(f"{{local_val_fraction}} {self.local_val_fraction} is invalid: use 0 <= value <= 0.5")

    def _check_signals(self) -> None:
        """MNIST-1D's size and seed; 1-D signals only with the models that take them, and back."""
        samples = self.mnist1d_samples
        if samples < MNIST1D_MIN_SAMPLES or samples % MNIST1D_CLASSES:
            raise ConfigError(f"{{mnist1d_samples}} {samples} is invalid: use a multiple of {MNIST1D_CLASSES} (as many "
                              f"samples of each digit), at least {MNIST1D_MIN_SAMPLES}")
        if not 0 <= self.mnist1d_seed < 2 ** 32:
            raise ConfigError(f"{{mnist1d_seed}} {self.mnist1d_seed} is invalid: use an integer from 0 to 2**32 - 1")
        signals = self.dataset in SIGNAL_DATASETS
        if signals and self.model not in SIGNAL_MODELS:
            raise ConfigError(f"{{model}} {self.model} takes images, but {{dataset}} {self.dataset} holds 1-D "
                              f"signals: use {{model}} {' or '.join(SIGNAL_MODELS)} "
                              f"({default_model(self.dataset)}: the default)")
        if not signals and self.model not in MODELS_2D:
            raise ConfigError(f"{{model}} {self.model} takes 1-D signals, but {{dataset}} {self.dataset} holds images: "
                              f"use it with {{dataset}} {' or '.join(SIGNAL_DATASETS)}")
        if signals and self.channels_last:
            raise ConfigError(f"{{channels_last}} True is for images (4-D batches), but {{dataset}} {self.dataset} "
                              "holds 1-D signals: use {channels_last} False")

    def _check_model_settings(self) -> None:
        """Normalisation and dropout: each model takes the ones it has layers for."""
        _choice("norm", self.norm, NORMS)
        _at_least("group_channels", self.group_channels, 1)
        for name in ("drop_rate", "last_drop_rate"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"{{{name}}} {value} is invalid: use 0 <= value < 1")
        if self.norm == "group":
            if self.model not in RESNETS:
                raise ConfigError(f"{{norm}} group needs a ResNet: {{model}} {self.model} has no normalisation "
                                  "layer to replace (use {norm} batch)")
            for channels in RESNET_CHANNELS:
                group_count(channels, self.group_channels)
        if self.model in FIXED_MODELS and (self.drop_rate or self.last_drop_rate):
            name = "drop_rate" if self.drop_rate else "last_drop_rate"
            raise ConfigError(f"{{{name}}} {getattr(self, name)} is invalid with {{model}} {self.model} "
                              f"({FIXED_MODELS[self.model]}): use {{{name}}} 0")

    def ineffective_options(self, names: Optional[Dict[str, str]] = None) -> List[str]:
        """The options set to a non-default value that this run does not use, each with why:
        ``["--sync-grad False (only allreduce uses it; the algorithm is crossover)", ...]``, flags
        written as ``names`` says (:func:`crossover_sgd.errors.flag_name`). The algorithm's options
        first, then the generic ones in field order.

        Job scripts pass every flag to every algorithm, so these are not refused; rank 0 warns
        about them once before training. Call on a validated configuration.
        """
        found = self.options.unused(self.algorithm) if self.options is not None else []
        sched = f"the schedule is {self.lr_schedule}"
        synthetic_or_folder = self.dataset in ("synthetic", "imagefolder", "imagenet")
        only_step = f"only the step schedule uses it; {sched}"
        milestones = (self.lr_schedule == "step" and self.step_size is None,
                      "{step_size} replaces it" if self.lr_schedule == "step" else only_step)
        rules: Dict[str, Tuple[bool, str]] = {  # field: (used in this run, why not)
            "poly_power": (self.lr_schedule == "poly", f"only the poly schedule uses it; {sched}"),
            "poly_end": (self.lr_schedule == "poly", f"only the poly schedule uses it; {sched}"),
            "poly_hold_epochs": (self.lr_schedule == "poly", f"only the poly schedule uses it; {sched}"),
            "step_milestones": milestones,
            "step_gamma": milestones,
            "step_size": (self.lr_schedule == "step", only_step),
            "gamma": (self.lr_schedule == "step" and self.step_size is not None,
                      "only the step schedule with {step_size} uses it" if self.lr_schedule == "step" else only_step),
            "dirichlet_alpha": (self.partition == "dirichlet",
                                f"only {{partition}} dirichlet uses it, not {self.partition}"),
            "train_data_length": (self.partition != "shard", "{partition} shard splits the data by rank; "
                                  "only the other partitions use it"),
            "local_val_fraction": (self.partition != "shard", "{partition} shard splits the data by rank; "
                                   "only the other partitions use it"),
            "group_channels": (self.norm == "group", f"only {{norm}} group uses it, not {self.norm}"),
            "lars_coef": (self.lars, "only LARS uses it; {lars} is False"),
            "lars_momentum_form": (self.lars, "only LARS uses it; {lars} is False"),
            "lars_momentum_correction": (self.lars, "only LARS uses it; {lars} is False"),
            "lars_trust_clip": (self.lars, "only LARS uses it; {lars} is False"),
            "sync_lars_start_epoch": (self.lars and self.sync_lars_group_size is not None,
                                      "only {sync_lars_group_size} uses it" if self.lars
                                      else "only LARS uses it; {lars} is False"),
            "mnist1d_samples": (self.dataset == "mnist1d", f"only {{dataset}} mnist1d uses it, not {self.dataset}"),
            "mnist1d_seed": (self.dataset == "mnist1d", f"only {{dataset}} mnist1d uses it, not {self.dataset}"),
            "synthetic_samples": (self.dataset == "synthetic", f"only {{dataset}} synthetic uses it, not {self.dataset}"),
            "synthetic_classes": (self.dataset == "synthetic", f"only {{dataset}} synthetic uses it, not {self.dataset}"),
            "image_size": (synthetic_or_folder, f"{{dataset}} {self.dataset} has a fixed image size"),
            "data_dir": (self.dataset not in ("digits", "synthetic"), f"{{dataset}} {self.dataset} reads no files"),
        }
        defaults = TrainConfig()
        for name in (f.name for f in fields(self) if f.name in rules):  # in the fields' order
            used, why = rules[name]
            value = getattr(self, name)
            if used or _same(value, getattr(defaults, name)):
                continue
            found.append(f"{{{name}}} {_show(value)} ({why})")
        return [render_fields(item, names) for item in found]

    def _check_divides_world(self, name: str, value: int) -> None:
        """``value`` must divide the world size, where it is known before launch."""
        known = self.nproc or self.world_size
        if known is not None and known % value:
            raise divides_world_error(name, value, known)


def default_model(dataset: str) -> str:
    """The model of a run that names none: ``cnn1d`` for 1-D signals (MNIST-1D), else ``small_cnn``."""
    return "cnn1d" if dataset in SIGNAL_DATASETS else "small_cnn"


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


def _choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{{{name}}} {value!r} is unknown: choose one of {', '.join(choices)}")


def group_count(channels: int, group_channels: int) -> int:
    """The number of GroupNorm groups of a layer of ``channels``: ``ceil(channels / group_channels)``;
    ConfigError where that does not divide ``channels``."""
    groups = -(-channels // group_channels)
    if channels % groups:
        raise ConfigError(f"{{group_channels}} {group_channels} is invalid: a layer of {channels} channels would get "
                          f"{groups} groups, which do not divide it; use a power of two such as 16 or 32")
    return groups


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{{{name}}} {value} is invalid: use an integer >= {low}")
