"""Device and backend choice, and the torch.distributed process group of a run."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from crossover_sgd.errors import ConfigError, divides_world_error
from crossover_sgd.runtime.exit import mark_distributed
from crossover_sgd.runtime.launch import LaunchInfo, resolve_rendezvous

__all__ = ["DistContext", "TRAINER", "select_device", "gpu_index", "select_backend", "init_distributed",
           "assign_roles", "shutdown"]

#: The role of a rank that runs the training loop.
TRAINER = "trainer"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """The process group of a run and this rank's place in it.

    ``local_rank``/``local_size``/``node_id`` describe the *logical* nodes the hierarchical
    algorithms use: the launcher's placement, or ``--gpu_per_node`` consecutive ranks per node.

    ``role`` is what this rank does (``"trainer"``, or an algorithm's own role such as a server);
    the trainers (``train_ranks``) form the training group ``train_group`` (None: the world, when
    every rank trains), over which the training loop's collectives run.
    """

    rank: int
    world_size: int
    local_rank: int
    local_size: int
    node_id: int
    device: torch.device
    backend: str
    launcher: str
    timeout_s: float
    role: str = TRAINER
    train_ranks: Optional[Tuple[int, ...]] = None  # None: every rank
    train_group: Any = None  # None: the world
    train_control_group: Any = None  # a Gloo group of the trainers for control flags (None: derive)
    heartbeat: Any = None  # the run's Heartbeat (runtime.watchdog): how long each peer has been silent

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.local_size

    @property
    def trainers(self) -> Tuple[int, ...]:
        return self.train_ranks if self.train_ranks is not None else tuple(range(self.world_size))

    @property
    def train_size(self) -> int:
        return len(self.trainers)

    @property
    def train_rank(self) -> int:
        """This rank's index among the trainers (-1 for other roles)."""
        return self.trainers.index(self.rank) if self.rank in self.trainers else -1

    @property
    def is_main(self) -> bool:
        """The rank that writes the run's shared outputs: the first trainer."""
        return self.rank == self.trainers[0]


def select_device(info: LaunchInfo, requested: str = "auto") -> torch.device:
    """One GPU per process, chosen by the launcher's local rank among the visible GPUs
    (:func:`gpu_index`); the CPU when asked for, or when ``auto`` finds no GPU."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{{device}} {requested!r} is not one of: auto, cpu, cuda")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("{device} cuda was asked for but no CUDA GPU is visible to this process")
    return torch.device("cuda", gpu_index(info.local_rank, info.local_size, torch.cuda.device_count()))


def gpu_index(local_rank: int, local_size: int, visible: int) -> int:
    """The index (among the ``visible`` GPUs torch sees) of local rank ``local_rank``'s GPU.

    ``CUDA_VISIBLE_DEVICES`` is honoured because torch only sees the listed GPUs: with one visible
    GPU per task (``srun --gpus-per-task=1``, or a site that binds GPUs) every rank takes
    ``cuda:0``; with the node's GPUs visible to every rank, local rank ``r`` takes ``cuda:r``.
    Fewer visible GPUs than local ranks (but more than one) would put two ranks on one GPU,
    which NCCL refuses: that is a ConfigError naming both numbers.
    """
    if visible < 1:
        raise ConfigError("{device} cuda was asked for but no CUDA GPU is visible to this process")
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise ConfigError(f"local rank {local_rank} of {local_size} needs its own GPU, but this process sees "
                          f"only {visible} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): "
                          "start one rank per GPU, or give each rank one GPU (srun --gpus-per-task=1)")
    return local_rank


def select_backend(device: torch.device, requested: str = "auto") -> str:
    """NCCL on GPUs, Gloo on CPUs, unless ``requested`` names one."""
    if requested not in ("auto", "nccl", "gloo"):
        raise ConfigError(f"{{backend}} {requested!r} is not one of: auto, nccl, gloo")
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        raise ConfigError("{backend} nccl needs GPUs, but this run is on the CPU: use {backend} gloo")
    return requested


def logical_placement(info: LaunchInfo, gpu_per_node: Optional[int]) -> tuple:
    """(local_rank, local_size, node_id), with ``gpu_per_node`` overriding the launcher's."""
    if gpu_per_node is None:
        return info.local_rank, info.local_size, info.node_id
    if gpu_per_node < 1 or info.world_size % gpu_per_node:
        raise divides_world_error("gpu_per_node", gpu_per_node, info.world_size)
    return info.rank % gpu_per_node, gpu_per_node, info.rank // gpu_per_node


def init_distributed(info: LaunchInfo, *, device: torch.device, backend: str, timeout_s: float,
                     gpu_per_node: Optional[int] = None) -> DistContext:
    """Create the default process group (a one-rank group for a single process)."""
    local_rank, local_size, node_id = logical_placement(info, gpu_per_node)
    mark_distributed()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_s)
    if info.world_size == 1:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    else:
        info = resolve_rendezvous(info)
        os.environ.setdefault("MASTER_ADDR", str(info.master_addr))
        os.environ.setdefault("MASTER_PORT", str(info.master_port))
        log.debug("rendezvous tcp://%s:%s rank %d/%d", info.master_addr, info.master_port,
                  info.rank, info.world_size)
        dist.init_process_group(backend, init_method=f"tcp://{info.master_addr}:{info.master_port}",
                                rank=info.rank, world_size=info.world_size, timeout=timeout,
                                device_id=device if device.type == "cuda" else None)
    return DistContext(info.rank, info.world_size, local_rank, local_size, node_id, device, backend,
                       info.launcher, timeout_s)


def assign_roles(ctx: DistContext, roles: Sequence[str]) -> DistContext:
    """``ctx`` with this rank's role and the training group of the ranks whose role is
    :data:`TRAINER`. Collective when some rank does not train (every rank creates the group)."""
    if len(roles) != ctx.world_size:
        raise ValueError(f"{len(roles)} roles for a world of {ctx.world_size} ranks")
    trainers = tuple(r for r, role in enumerate(roles) if role == TRAINER)
    if not trainers:
        raise ConfigError(f"no rank trains among the {ctx.world_size}: the roles are {', '.join(roles)}")
    if len(trainers) == ctx.world_size:
        return replace(ctx, role=roles[ctx.rank])
    timeout = timedelta(seconds=ctx.timeout_s)  # not torch's default (30 min): a lost trainer ends the run in time
    group = dist.new_group(list(trainers), timeout=timeout)
    control = group if ctx.backend == "gloo" else dist.new_group(list(trainers), backend="gloo", timeout=timeout)
    return replace(ctx, role=roles[ctx.rank], train_ranks=trainers, train_group=group, train_control_group=control)


def shutdown() -> None:
    """Destroy the process group if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
