"""Models: a small CNN for the default data, and the torchvision ResNet family.

ResNets keep torchvision's module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``fc``),
which Crossover-SGD's ``coarse``/``fine`` segments are cut along. For inputs smaller than 64
pixels the stem becomes a 3x3 stride-1 convolution without max-pooling (the usual CIFAR variant),
and the first convolution takes the data's number of channels.
"""

from __future__ import annotations

import torch
from torch import nn

from crossover_sgd.config import RESNETS

__all__ = ["SmallCNN", "build_model", "model_dtype"]


class SmallCNN(nn.Module):
    """Two 3x3 convolutions and a linear classifier; trains on 8x8 digits in seconds."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


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
    model = build_model(config.model, num_classes, in_channels, image_size)
    return model.to(device, dtype=model_dtype(config), memory_format=memory_format)


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 224) -> nn.Module:
    """A freshly initialised model (no pretrained weights are ever downloaded)."""
    if name == "small_cnn":
        return SmallCNN(num_classes, in_channels)
    if name not in RESNETS:
        raise ValueError(f"unknown model {name!r}")
    import torchvision.models as tvm

    model = getattr(tvm, name)(weights=None, num_classes=num_classes)
    if image_size < 64 or in_channels != 3:
        small = image_size < 64
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, kernel_size=3 if small else 7,
                                stride=1 if small else 2, padding=1 if small else 3, bias=False)
        if small:
            model.maxpool = nn.Identity()
    return model
