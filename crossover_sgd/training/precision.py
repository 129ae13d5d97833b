"""Mixed precision and guarded optimizer steps.

``--amp fp16``: autocast to float16 with a GradScaler (GPU only); ``--amp bf16``: autocast to
bfloat16, no scaler (CPU and GPU). Parameters stay in ``--dtype`` (float32; float64 is refused
with autocast): gossip algorithms exchange these master weights.

A step whose gradients are not finite changes nothing (``--skip-nonfinite``, default on): the
GradScaler skips it under fp16; otherwise the gradients are checked, and an optimizer that
supports the ``found_inf`` protocol (LARS) masks the step without a host sync, while others are
skipped after one scalar read. The replicas' parameters therefore stay finite, and a gossip
algorithm never sends non-finite values to its peers.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Dict, Iterable

import torch

from crossover_sgd.errors import ConfigError

__all__ = ["Precision", "check_amp"]

_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_amp(mode: str, device: torch.device) -> None:
    """fp16 needs a GPU (its GradScaler is a CUDA feature here); bf16 runs anywhere."""
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("{amp} fp16 (the study's --amp True) needs a GPU (fp16 with a GradScaler), but this "
                          "run is on the CPU: use {amp} bf16 on the CPU, or {amp} off")


class Precision:
    """Autocast, loss scaling and the guarded optimizer step of one run."""

    def __init__(self, mode: str, device: torch.device, skip_nonfinite: bool = True):
        check_amp(mode, device)
        self.device, self.dtype, self.skip_nonfinite = device, _DTYPES[mode], skip_nonfinite
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)  # steps skipped so far

    def autocast(self) -> ContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Make ``.grad`` the true gradients (before clipping and LARS norms)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]) -> None:
        """``optimizer.step()``, unless the gradients are not finite."""
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(optimizer)
            self.scaler.update()
            self.skipped += int(self.scaler.get_scale() < scale)
            return
        if not self.skip_nonfinite:
            optimizer.step()
            return
        grads = [p.grad for p in params if p.grad is not None]
        found_inf = torch.zeros((), dtype=torch.float32, device=self.device)
        if grads:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, torch.ones_like(found_inf))
        self.skipped += found_inf.to(torch.int64)
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.step(found_inf=found_inf)  # masked inside the optimizer, no host sync
        elif not bool(found_inf):
            optimizer.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "skipped": self.skipped.cpu()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.skipped = state["skipped"].to(self.device)
