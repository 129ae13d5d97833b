"""The validation loop: the summed loss, correct predictions and count of a model on a dataset.
Used by the trainers (:meth:`Trainer._validate`) and by ranks of other roles (a parameter server
evaluating its model)."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Dict

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["validation_totals", "evaluator"]


@torch.no_grad()
def validation_totals(model: nn.Module, dataset: Dataset, to_device: Callable[[torch.Tensor], torch.Tensor],
                      device: torch.device, dtype: torch.dtype, batch_size: int, workers: int = 0,
                      autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> torch.Tensor:
    """float64 ``[loss sum, correct, count]`` of ``model`` (in eval mode meanwhile) on ``dataset``."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=max(256, batch_size), num_workers=workers)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for inputs, targets in loader:
        inputs = to_device(inputs)
        targets = targets.to(device)
        with autocast():
            logits = model(inputs).to(dtype)  # autocast's half-precision logits: back to the model's
        totals[0] += nn.functional.cross_entropy(logits, targets, reduction="sum").double()
        totals[1] += (logits.argmax(1) == targets).sum()
        totals[2] += targets.numel()
    model.train(was_training)
    return totals


def evaluator(dataset: Dataset, device: torch.device, dtype: torch.dtype,
              batch_size: int) -> Callable[[nn.Module], Dict[str, float]]:
    """``evaluate(model) -> {"val_loss", "val_acc"}`` on ``dataset`` (floating inputs in ``dtype``)."""
    def to_device(inputs: torch.Tensor) -> torch.Tensor:
        return inputs.to(device, dtype=dtype if inputs.is_floating_point() else inputs.dtype)

    def evaluate(model: nn.Module) -> Dict[str, float]:
        loss_sum, correct, count = validation_totals(model, dataset, to_device, device, dtype, batch_size).tolist()
        return {"val_loss": loss_sum / max(count, 1), "val_acc": correct / max(count, 1)}

    return evaluate
