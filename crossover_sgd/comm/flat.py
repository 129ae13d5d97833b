"""A model's tensors viewed as one flat buffer per dtype, for bucketed collectives."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["FlatParams"]


class FlatParams:
    """Pack tensors into contiguous per-dtype buffers and copy results back.

    One collective per buffer replaces one per tensor. ``pack()`` refreshes the buffers from the
    tensors, ``unpack()`` writes them back; ``nbytes`` is the payload of one exchange.
    """

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.groups: Dict[torch.dtype, List[torch.Tensor]] = {}
        for tensor in tensors:
            self.groups.setdefault(tensor.dtype, []).append(tensor)
        self.buffers: Dict[torch.dtype, torch.Tensor] = {
            dtype: torch.empty(sum(t.numel() for t in group), dtype=dtype, device=group[0].device)
            for dtype, group in self.groups.items()
        }

        self._scratch: Dict[Optional[torch.dtype], List[torch.Tensor]] = {}

    def scratch(self, dtype: Optional[torch.dtype] = None) -> List[torch.Tensor]:
        """Receive buffers shaped like ``buffers``, in ``dtype`` (default: theirs); allocated once."""
        if dtype not in self._scratch:
            self._scratch[dtype] = [torch.empty_like(buf, dtype=dtype or buf.dtype) for buf in self.buffers.values()]
        return self._scratch[dtype]

    @property
    def nbytes(self) -> int:
        return sum(buf.numel() * buf.element_size() for buf in self.buffers.values())

    def pack(self) -> List[torch.Tensor]:
        for dtype, group in self.groups.items():
            torch.cat([t.detach().reshape(-1) for t in group], out=self.buffers[dtype])
        return list(self.buffers.values())

    def unpack(self) -> None:
        with torch.no_grad():
            for dtype, group in self.groups.items():
                offset = 0
                for tensor in group:
                    n = tensor.numel()
                    tensor.copy_(self.buffers[dtype][offset:offset + n].view_as(tensor))
                    offset += n
