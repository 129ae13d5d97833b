"""A model's tensors viewed as one flat buffer per dtype, for bucketed collectives."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["FlatParams"]


def _dense(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` fills its memory exactly (contiguous or channels_last): it can then
    live in a region of a flat buffer with its own strides."""
    if tensor.is_contiguous():
        return True
    return tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)


class FlatParams:
    """Tensors gathered into contiguous per-dtype buffers, for one collective per buffer.

    Two modes:

    * copy (default): ``pack()`` copies the tensors into the buffers, ``unpack()`` copies them
      back. For short-lived groups (a broadcast at start-up, gradients).
    * ``share_storage=True``: the tensors are moved *into* the buffers once (``tensor.data`` is
      rebound to a view of its region, strides kept, so channels_last survives). Optimizer
      steps write the buffers directly; ``pack()`` and ``unpack()`` copy nothing. This is what
      the gossip algorithms use every step: it removes two passes over the model per round. A
      tensor that was replaced since (``optimizer.load_state_dict`` makes new momentum buffers)
      is noticed by ``pack()`` and moved in again; a tensor that is not dense (neither
      contiguous nor channels_last) stays in copy mode.

    ``nbytes`` is the payload of one exchange.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], share_storage: bool = False):
        self.groups: Dict[torch.dtype, List[torch.Tensor]] = {}
        for tensor in tensors:
            self.groups.setdefault(tensor.dtype, []).append(tensor)
        self.buffers: Dict[torch.dtype, torch.Tensor] = {
            dtype: torch.empty(sum(t.numel() for t in group), dtype=dtype, device=group[0].device)
            for dtype, group in self.groups.items()
        }
        self.share_storage = share_storage
        # (tensor, its region of the buffer, whether the tensor lives there) per tensor
        self._regions: List[Tuple[torch.Tensor, torch.Tensor, bool]] = []
        for dtype, group in self.groups.items():
            offset, buffer = 0, self.buffers[dtype]
            for tensor in group:
                adopt = share_storage and _dense(tensor)
                region = (buffer.as_strided(tensor.size(), tensor.stride(), buffer.storage_offset() + offset) if adopt
                          else buffer[offset:offset + tensor.numel()].view(tensor.shape))
                self._regions.append((tensor, region, adopt))
                offset += tensor.numel()
        copied = [(tensor, region) for tensor, region, adopt in self._regions if not adopt]
        self._copied_tensors = [tensor for tensor, _ in copied]
        self._copied_regions = [region for _, region in copied]
        if share_storage:
            self._move_in(force=True)
        self._scratch: Dict[Tuple[str, Optional[torch.dtype]], List[torch.Tensor]] = {}

    def _move_in(self, force: bool = False) -> None:
        """Rebind every adoptable tensor that does not live in its region (yet) to that region."""
        with torch.no_grad():
            for tensor, region, adopt in self._regions:
                if adopt and (force or tensor.data_ptr() != region.data_ptr()):
                    region.copy_(tensor)
                    tensor.data = region

    def scratch(self, dtype: Optional[torch.dtype] = None, slot: str = "recv") -> List[torch.Tensor]:
        """Buffers shaped like ``buffers``, in ``dtype`` (default: theirs), one set per ``slot``
        (e.g. ``"recv"``, ``"sent"``); allocated on first use and reused."""
        key = (slot, dtype)
        if key not in self._scratch:
            self._scratch[key] = [torch.empty_like(buf, dtype=dtype or buf.dtype) for buf in self.buffers.values()]
        return self._scratch[key]

    def snapshot(self, values: Sequence[torch.Tensor], slot: str = "sent") -> List[torch.Tensor]:
        """A copy of ``values`` (tensors shaped like ``buffers``) in the scratch set ``slot``: what
        an overlapped round sends, since the originals change while the messages travel."""
        copies = self.scratch(slot=slot)
        torch._foreach_copy_(copies, list(values))
        return copies

    @property
    def nbytes(self) -> int:
        return sum(buf.numel() * buf.element_size() for buf in self.buffers.values())

    def pack(self) -> List[torch.Tensor]:
        """The buffers, holding the tensors' current values."""
        if self.share_storage:
            self._move_in()
        if self._copied_tensors:
            with torch.no_grad():
                torch._foreach_copy_(self._copied_regions, self._copied_tensors)
        return list(self.buffers.values())

    def unpack(self) -> None:
        """Write the buffers' values to the tensors (nothing to do for tensors living in them)."""
        if self._copied_tensors:
            with torch.no_grad():
                torch._foreach_copy_(self._copied_tensors, self._copied_regions)
