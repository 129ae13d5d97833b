"""Models: a small CNN for the default data, a 1-D CNN for MNIST-1D (``cnn1d``), multinomial
logistic regression, the PyTorch MNIST example's CNN (``mnist_cnn``), AlexNet for CIFAR-10
(``alexnet_cifar``), and the torchvision ResNet family.

``mnist_cnn`` and ``alexnet_cifar`` (the models of the parameter-server study: MNIST CNN, AlexNet
and ResNet-18 on CIFAR-10) take any channel count and any image size >= 8: an adaptive average
pooling before their first linear layer keeps its input size fixed, and is the identity on the
size each was written for (28x28 and 32x32). They have their own fixed dropouts and no
normalisation, so ``--norm group``, ``--drop-rate`` and ``--last-drop-rate`` are refused for them.

ResNets keep torchvision's module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``fc``),
which Crossover-SGD's ``coarse``/``fine`` segments are cut along. For inputs smaller than 64
pixels the stem becomes a 3x3 stride-1 convolution without max-pooling (the usual CIFAR variant),
and the first convolution takes the data's number of channels.

The peer-to-peer family's variants (``--norm group``, ``--drop-rate``, ``--last-drop-rate``) keep
every parameter's and buffer's name: GroupNorm replaces BatchNorm2d under the same name, and each
dropout goes after a module without parameters (``Sequential(module, dropout)``) or at the end of
a stage's ``Sequential``, so no index of a block moves and no weight initialisation changes.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import nn

from crossover_sgd.config import RESNETS, SIGNAL_DATASETS, group_count

__all__ = ["SmallCNN", "CNN1D", "LogisticRegression", "MnistCNN", "AlexNetCifar", "build_model", "model_dtype"]


class SmallCNN(nn.Module):
    """Two 3x3 convolutions and a linear classifier; trains on 8x8 digits in seconds.
    ``drop_rate``: Dropout2d between the convolutions; ``last_drop_rate``: Dropout before the classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, drop_rate: float = 0.0,
                 last_drop_rate: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), _then_dropout(nn.ReLU(inplace=True), nn.Dropout2d, drop_rate),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
            _then_dropout(nn.AdaptiveAvgPool2d(4), nn.Dropout, last_drop_rate),
        )
        self.classifier = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class CNN1D(nn.Module):
    """The convolutional network of the MNIST-1D paper (Greydanus and Kobak, 2020, its reference
    code's ``ConvBase``) for signals of ``length`` samples: three 1-D convolutions of ``width``
    channels (kernel 5, then 3 and 3; stride 2, padding 1 each), ReLU after each, and a linear
    classifier on the flattened map. 5,210 parameters for 40 samples and 10 classes; no
    normalisation, no dropout. The first convolution is named ``conv1``, so Crossover-SGD's
    segments are ``stem``, ``conv2``, ``conv3``, ``fc``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, length: int = 40, width: int = 25):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, width, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        for conv in (self.conv1, self.conv2, self.conv3):  # each map's length: (L + 2 - kernel) // 2 + 1
            length = (length + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        self.fc = nn.Linear(width * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        return self.fc(torch.flatten(x, 1))


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer on the flattened input (softmax in the loss)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


class MnistCNN(nn.Module):
    """The CNN of the PyTorch MNIST example (pytorch/examples, ``mnist/main.py``): conv 1->32 3x3,
    ReLU, conv 32->64 3x3, ReLU, max-pool 2, dropout 0.25, fc 9216->128, ReLU, dropout 0.5,
    fc 128->10; same module and parameter names (``conv1``, ``conv2``, ``fc1``, ``fc2``) and
    PyTorch's default initialisation.

    Two differences: it returns logits (the example ends in ``log_softmax`` for ``nll_loss``; the
    training loop's cross-entropy applies it), and ``resize``, an ``AdaptiveAvgPool2d(12)`` after
    the max-pool, brings any map to 12x12 so ``fc1`` stays 64*12*12 -> 128 for any image size >= 6
    (>= 8 with the configuration's floor) and channel count. On 28x28 the map is already 12x12 and
    the pooling is the identity: the network is exactly the example's."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.resize = nn.AdaptiveAvgPool2d(12)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(64 * 12 * 12, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        x = self.dropout1(self.resize(self.pool(x)))
        x = self.dropout2(self.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


class AlexNetCifar(nn.Module):
    """AlexNet for CIFAR-10 in its common small-image layout (as in icpm/pytorch-cifar10,
    ``models/AlexNet.py``, and the federated and parameter-server code copied from it; the study's
    own model code is not in its seed, so this is the usual convention, not a verified copy):

    * ``features``: conv C->64 3x3 stride 2 pad 1, ReLU, max-pool 2; conv 64->192 3x3 pad 1,
      ReLU, max-pool 2; conv 192->384, ReLU; conv 384->256, ReLU; conv 256->256 (3x3 pad 1 each),
      ReLU, max-pool 2;
    * ``avgpool``: ``AdaptiveAvgPool2d(2)``;
    * ``classifier``: dropout 0.5, linear 256*2*2 -> 4096, ReLU, dropout 0.5, linear 4096 -> 4096,
      ReLU, linear 4096 -> num_classes.

    23.3 M parameters for 10 classes, PyTorch's default initialisation, no normalisation. The
    max-pools round up (``ceil_mode=True``), so maps smaller than 2 survive them (an 8x8 digit:
    4 -> 2 -> 1 -> 1); on 32x32 every map they see has an even size (16, 8, 4) and rounding up
    changes nothing. With ``avgpool`` (the identity on 32x32's 2x2 map) any size >= 8 works and
    on CIFAR-10 the network is exactly the usual one."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True), _max_pool2(),
            nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(inplace=True), _max_pool2(),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), _max_pool2(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 2 * 2, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _max_pool2() -> nn.MaxPool2d:
    """2x2 max-pooling, stride 2, rounding up: the floor-mode pooling on even sizes, 1 -> 1 on a 1x1 map."""
    return nn.MaxPool2d(2, ceil_mode=True)


def _then_dropout(module: nn.Module, dropout: Callable[[float], nn.Module], rate: float) -> nn.Module:
    """``module``, followed by ``dropout(rate)`` where ``rate > 0`` (``module`` has no parameters)."""
    return nn.Sequential(module, dropout(rate)) if rate > 0 else module


def _group_norm(channels: int, group_channels: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with ``ceil(channels / group_channels)`` groups."""
    return nn.GroupNorm(group_count(channels, group_channels), channels)


def model_dtype(config) -> torch.dtype:
    """The dtype of the run's parameters and floating inputs (``config.dtype``: float32 or float64)."""
    return {"float32": torch.float32, "float64": torch.float64}[config.dtype]


def initial_model(config, num_classes: int, in_channels: int, image_size: int, device: torch.device,
                  memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """``config.model`` with the initial weights of the run (seeded by ``config.seed``, so every
    rank, whatever its role, builds the same), on ``device``, its floating-point parameters and
    buffers in ``config.dtype``. The weights are drawn in float32 and then cast, so a float64 run
    starts from exactly the weights of the float32 run with the same seed."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes, in_channels, image_size, norm=config.norm,
                        group_channels=config.group_channels, drop_rate=config.drop_rate,
                        last_drop_rate=config.last_drop_rate, dims=1 if config.dataset in SIGNAL_DATASETS else 2)
    return model.to(device, dtype=model_dtype(config), memory_format=memory_format)


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 224, *, norm: str = "batch",
                group_channels: int = 32, drop_rate: float = 0.0, last_drop_rate: float = 0.0,
                dims: int = 2) -> nn.Module:
    """A freshly initialised model (no pretrained weights are ever downloaded), for inputs of
    ``in_channels`` x ``image_size`` ** ``dims`` (``dims`` 1: 1-D signals of ``image_size`` samples,
    for ``cnn1d`` and ``logistic``).

    ResNets: ``norm="group"`` puts GroupNorm(ceil(C / group_channels), C) in place of every
    BatchNorm2d; ``drop_rate > 0`` puts Dropout2d after the stem and after each stage but the last;
    ``last_drop_rate > 0`` puts Dropout before ``fc``. The small CNN takes the dropouts; the
    logistic regression, ``cnn1d``, ``mnist_cnn`` and ``alexnet_cifar`` none of these (their dropouts are
    fixed; :meth:`TrainConfig.validate` refuses them, and they are ignored here)."""
    if name == "small_cnn":
        return SmallCNN(num_classes, in_channels, drop_rate=drop_rate, last_drop_rate=last_drop_rate)
    if name == "cnn1d":
        return CNN1D(num_classes, in_channels, image_size)
    if name == "logistic":
        return LogisticRegression(in_channels * image_size ** dims, num_classes)
    if name == "mnist_cnn":
        return MnistCNN(num_classes, in_channels)
    if name == "alexnet_cifar":
        return AlexNetCifar(num_classes, in_channels)
    if name not in RESNETS:
        raise ValueError(f"unknown model {name!r}")
    import torchvision.models as tvm

    norm_layer: Optional[Callable[[int], nn.Module]] = None
    if norm == "group":
        norm_layer = functools.partial(_group_norm, group_channels=group_channels)
    elif norm != "batch":
        raise ValueError(f"unknown norm {norm!r}")
    model = getattr(tvm, name)(weights=None, num_classes=num_classes, norm_layer=norm_layer)
    if image_size < 64 or in_channels != 3:
        small = image_size < 64
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, kernel_size=3 if small else 7,
                                stride=1 if small else 2, padding=1 if small else 3, bias=False)
        if small:
            model.maxpool = nn.Identity()
    if drop_rate > 0:
        model.maxpool = _then_dropout(model.maxpool, nn.Dropout2d, drop_rate)  # the stem's last module
        for stage in (model.layer1, model.layer2, model.layer3):
            stage.append(nn.Dropout2d(drop_rate))
    model.avgpool = _then_dropout(model.avgpool, nn.Dropout, last_drop_rate)  # dropout commutes with the flatten
    return model
