"""Cutting a model into contiguous segments ("chromosomes") for Crossover-SGD.

Tensors are taken in ``named_parameters()`` order (then floating-point buffers, when asked for,
each attached to the segment of the module that owns it) and cut into contiguous segments:

* ``coarse``: one segment per top-level stage. For a torchvision ResNet: stem (``conv1``,
  ``bn1``), ``layer1`` ... ``layer4``, ``fc`` (6 segments). Other models: one per top-level child.
* ``fine``: one segment per residual block: stem, ``layer1.0`` ... ``layer4.2``, ``fc`` (18 for
  ResNet-50). Other models: one per second-level child.
* ``N`` segments of about equal bytes, for any model (``--segments N``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from crossover_sgd.errors import ConfigError

__all__ = ["Segment", "split_model", "attach_momentum", "CHROMOSOMES"]

CHROMOSOMES = ("coarse", "fine")
_STEM = ("conv1", "bn1", "relu", "maxpool")


@dataclass
class Segment:
    """A named, contiguous group of a model's tensors (the parameter and buffer objects
    themselves, so that :class:`~crossover_sgd.comm.FlatParams` can move them into its buffers)."""

    name: str
    names: List[str] = field(default_factory=list)
    tensors: List[torch.Tensor] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


def _key(name: str, chromosome: str) -> str:
    parts = name.split(".")
    if parts[0] in _STEM:
        return "stem"
    depth = 1 if chromosome == "coarse" or len(parts) <= 2 else 2
    return ".".join(parts[:depth])


def _named_tensors(model: nn.Module, buffers: bool) -> List[Tuple[str, torch.Tensor]]:
    named = list(model.named_parameters())
    if buffers:
        named += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    return named


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def split_model(model: nn.Module, chromosome: Optional[str] = None, num_segments: Optional[int] = None,
                buffers: bool = False) -> List[Segment]:
    """Segments of ``model`` by ``chromosome`` (coarse/fine) or into ``num_segments`` equal-byte parts."""
    if (chromosome is None) == (num_segments is None):
        raise ValueError("give exactly one of chromosome and num_segments")
    params = list(model.named_parameters())
    if chromosome is not None:
        if chromosome not in CHROMOSOMES:
            raise ConfigError(f"{{chromosome}} {chromosome!r} is unknown: choose coarse or fine, or {{segments}} N")
        keys = [_key(n, chromosome) for n, _ in params]
    else:
        keys = _equal_byte_keys([t for _, t in params], num_segments)  # type: ignore[arg-type]
    segments: Dict[str, Segment] = {}
    key_of_module: Dict[str, str] = {}
    for (name, tensor), key in zip(params, keys):
        segment = segments.setdefault(key, Segment(key))
        segment.names.append(name)
        segment.tensors.append(tensor)
        key_of_module[_owner(name)] = key
    if buffers:
        for name, tensor in _named_tensors(model, True)[len(params):]:
            key = key_of_module.get(_owner(name), keys[-1])
            segments[key].names.append(name)
            segments[key].tensors.append(tensor)
    return list(segments.values())


def _equal_byte_keys(tensors: List[torch.Tensor], count: int) -> List[str]:
    """Assign each tensor (in order) to one of ``count`` contiguous, non-empty parts of about
    equal bytes: part k starts after the tensor that crosses ``k/count`` of the total bytes."""
    if count < 1 or count > len(tensors):
        raise ConfigError(f"{{segments}} {count} is invalid for this model: use 1 to {len(tensors)} "
                          "(the number of parameter tensors)")
    cumulative, total = [], 0
    for tensor in tensors:
        total += tensor.numel() * tensor.element_size()
        cumulative.append(total)
    starts, previous = [0], 0
    for k in range(1, count):
        crossing = bisect.bisect_left(cumulative, total * k / count)
        start = min(max(crossing + 1, previous + 1), len(tensors) - (count - k))
        starts.append(start)
        previous = start
    starts.append(len(tensors))
    return [f"part{k}" for k in range(count) for _ in range(starts[k + 1] - starts[k])]


def attach_momentum(segments: List[Segment], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Add each parameter's momentum buffer (if it has one yet) to the parameter's segment."""
    segment_of = {name: segment for segment in segments for name in segment.names}
    for name, param in model.named_parameters():
        buf = optimizer.state.get(param, {}).get("momentum_buffer")
        if buf is not None:
            segment_of[name].names.append(f"{name}:momentum")
            segment_of[name].tensors.append(buf)
