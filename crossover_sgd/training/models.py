"""Models: a small CNN for the default data, multinomial logistic regression, and the torchvision
ResNet family.

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

from crossover_sgd.config import RESNETS, group_count

__all__ = ["SmallCNN", "LogisticRegression", "build_model", "model_dtype"]


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


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer on the flattened input (softmax in the loss)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


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
                        last_drop_rate=config.last_drop_rate)
    return model.to(device, dtype=model_dtype(config), memory_format=memory_format)


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 224, *, norm: str = "batch",
                group_channels: int = 32, drop_rate: float = 0.0, last_drop_rate: float = 0.0) -> nn.Module:
    """A freshly initialised model (no pretrained weights are ever downloaded).

    ResNets: ``norm="group"`` puts GroupNorm(ceil(C / group_channels), C) in place of every
    BatchNorm2d; ``drop_rate > 0`` puts Dropout2d after the stem and after each stage but the last;
    ``last_drop_rate > 0`` puts Dropout before ``fc``. The small CNN takes the dropouts; the
    logistic regression none of these (:meth:`TrainConfig.validate` refuses them)."""
    if name == "small_cnn":
        return SmallCNN(num_classes, in_channels, drop_rate=drop_rate, last_drop_rate=last_drop_rate)
    if name == "logistic":
        return LogisticRegression(in_channels * image_size * image_size, num_classes)
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
