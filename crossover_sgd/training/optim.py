"""The optimizer of a run: SGD with momentum/Nesterov, or LARS (``--lars True``)."""

from __future__ import annotations

import torch
from torch import nn

from crossover_sgd.config import TrainConfig

__all__ = ["build_optimizer"]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD over all parameters, or LARS with 1-D tensors and biases excluded from the trust ratio
    and weight decay (the MXNet recipe of the study)."""
    if not config.lars:
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    import lars

    clip = config.lars_trust_clip  # "larc": LARC clipping; a number: a cap on the trust ratio
    return lars.LARS(lars.param_groups(model), lr=config.lr, momentum=config.momentum,
                     weight_decay=config.weight_decay, eta=config.lars_coef, eps=1e-9,
                     nesterov=config.nesterov, larc=clip == "larc",
                     trust_ratio_max=None if clip in (None, "larc") else clip,
                     momentum_form=config.lars_momentum_form,
                     momentum_correction=config.lars_momentum_correction)
