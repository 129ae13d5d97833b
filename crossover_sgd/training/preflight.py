"""The one preflight of a run: every check of its input that needs no process group.

Called by the local launcher (``--nproc N``) before it starts any rank, so that bad input is
refused once and at once, and by every rank before the process group starts, with the world size
and device it actually has (under srun, mpirun or torchrun the ranks are the first to see them).
Nothing is written before it passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from crossover_sgd.algorithms.registry import ALGORITHMS
from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.training.checkpoint import published_checkpoint
from crossover_sgd.training.data import preflight_data
from crossover_sgd.training.outputs import check_out_dir
from crossover_sgd.training.precision import check_amp

__all__ = ["preflight", "launcher_device", "check_local_gpus"]


def launcher_device(config: TrainConfig) -> Optional[torch.device]:
    """The device the local ranks will use, where the launcher can tell (None: a GPU, chosen per rank)."""
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return None


def check_local_gpus(config: TrainConfig, nproc: int) -> None:
    """``--nproc N`` on GPUs with NCCL needs N visible GPUs (NCCL refuses two ranks on one GPU)."""
    if launcher_device(config) is not None or config.backend == "gloo":
        return
    visible = torch.cuda.device_count()
    if nproc > visible:
        raise ConfigError(f"{{nproc}} {nproc} local ranks with NCCL need {nproc} GPUs, but this process sees "
                          f"{visible} (NCCL refuses two ranks on one GPU): use {{nproc}} {visible} or {{device}} cpu")


def preflight(config: TrainConfig, world_size: Optional[int], device: Optional[torch.device]) -> None:
    """Check ``config`` against the world size and device (each where known): its values, the
    algorithm's options, the output directory, the checkpoint to resume, the data, mixed precision.
    Raises ConfigError; writes nothing."""
    config.validate()
    if config.options is not None and world_size is not None:
        config.options.check(config.algorithm, world_size)
    if config.out is not None:
        out = Path(config.out)
        own = not ALGORITHMS[config.algorithm].group_collectives  # each trainer checkpoints alone
        check_out_dir(out, resume=config.resume, own_checkpoints=own)
        if config.resume and world_size is not None and not own:
            published_checkpoint(out, world_size)
    elif config.resume:
        raise ConfigError("{resume} needs {out} DIR naming the run to continue")
    preflight_data(config)
    if device is not None:
        check_amp(config.amp, device)
