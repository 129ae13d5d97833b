"""AllReduce-SGD, the baseline: every rank ends every step with the same parameters.

* ``sync_grad=True`` (default): gradients are averaged before the step by torch's
  DistributedDataParallel, which all-reduces gradient buckets while backward still runs; with
  gradient accumulation only the last micro-batch communicates (``no_sync`` on the others).
* ``sync_grad=False``: every rank steps on its own gradient, then parameters and floating-point
  buffers are averaged (one bucketed all-reduce per dtype).

Traffic is counted as a ring all-reduce moves it: ``2 (n-1)/n`` of the payload sent and received.
"""


import time
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.algorithms.options import AlgorithmOptions, option
from crossover_sgd.comm import CommStats, FlatParams, average, model_state_tensors, ring_allreduce_bytes

__all__ = ["AllReduceSGD", "AllReduceOptions"]


@dataclass
class AllReduceOptions(AlgorithmOptions):
    sync_grad: bool = option(True, "allreduce: average gradients before the step (True) or parameters after it "
                                   "(False)", metavar="BOOL")


def _counting_allreduce_hook(stats: CommStats, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: average a gradient bucket and count its traffic and time."""
    buffer = bucket.buffer()
    world = dist.get_world_size()
    start = time.perf_counter()
    future = dist.all_reduce(buffer.div_(world), async_op=True).get_future()
    volume = ring_allreduce_bytes(buffer.numel() * buffer.element_size(), world)

    def finish(done: torch.futures.Future) -> torch.Tensor:
        stats.add(volume, volume, time.perf_counter() - start)
        return done.value()[0]

    return future.then(finish)


class AllReduceSGD(Algorithm):
    name = "allreduce"
    replicas_identical = True
    options_class = AllReduceOptions

    def prepare(self, model: nn.Module) -> nn.Module:
        self.model = model
        if self.ctx.world_size == 1:
            return model  # nothing to average: no DDP wrapper, no hooks
        if not self.options.sync_grad:
            super().prepare(model)
            self._flat = FlatParams(model_state_tensors(model), share_storage=True)
            return model
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        self._ddp = DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)
        self._ddp.register_comm_hook(self.comm, _counting_allreduce_hook)
        return self._ddp

    def micro_batch(self, is_last: bool) -> ContextManager[Any]:
        if self.options.sync_grad and not is_last and self.ctx.world_size > 1:
            return self._ddp.no_sync()
        return super().micro_batch(is_last)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.comm.rounds += 1
        if not self.options.sync_grad and self.ctx.world_size > 1:
            average(self._flat, stats=self.comm, what="parameter average")
