"""What the GPU tests share: the skip reason, small models, a one-rank process group on the GPU,
and a bounded subprocess runner that never leaves a rank behind.

The tests of this folder are marked ``gpu`` and skipped where torch sees no CUDA GPU (every CPU
machine of the project); ``scripts/gpu/gpu_check.py`` runs them where a GPU is lent. Only
``test_gpu_check_script.py`` (the script's refusal without a GPU) runs everywhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Dict, Iterator, List, Optional, Sequence

import pytest
import torch
from torch import nn

CUDA = torch.cuda.is_available()
GPU_COUNT = torch.cuda.device_count() if CUDA else 0

#: The reason every GPU test gives when it is skipped.
NO_GPU = ("needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
          "(scripts/gpu/gpu_check.py runs the tests marked gpu where a GPU is lent)")

#: ``pytestmark`` of every GPU test module.
GPU_MARKS = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=NO_GPU)]


def cuda0() -> torch.device:
    return torch.device("cuda", 0)


def bn_cnn(seed: int = 0, in_channels: int = 3, classes: int = 10) -> nn.Module:
    """Conv (bias) + BatchNorm + conv (no bias) + linear: 4-D, 2-D and 1-D parameters, float
    buffers (running statistics) and an int64 one (``num_batches_tracked``)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, classes),
    )


def batch(n: int = 16, seed: int = 7, channels: int = 3, size: int = 8, classes: int = 10):
    """A fixed batch of random images and labels, on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, channels, size, size, generator=gen),
            torch.randint(0, classes, (n,), generator=gen))


def snapshot(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None):
    """Clones of the parameters and of the optimizer state, to compare a skipped step with."""
    params = [p.detach().clone() for p in model.parameters()]
    state = ([{k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
              for p in model.parameters()] if optimizer is not None else [])
    return params, state


def assert_unchanged(before, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    params, state = before
    for i, (p, old) in enumerate(zip(model.parameters(), params)):
        assert torch.equal(p.detach(), old), f"parameter {i} changed in a step that had to be skipped"
    if optimizer is not None:
        for i, (p, old) in enumerate(zip(model.parameters(), state)):
            for key, value in old.items():
                now = optimizer.state[p][key]
                same = torch.equal(now, value) if torch.is_tensor(value) else now == value
                assert same, f"optimizer state {key!r} of parameter {i} changed in a skipped step"


def changed(before, model: nn.Module) -> bool:
    return any(not torch.equal(p.detach(), old) for p, old in zip(model.parameters(), before[0]))


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Inside: any CUDA operation that synchronizes with the host raises (``set_sync_debug_mode``)."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@contextlib.contextmanager
def one_rank_group(backend: str = "nccl") -> Iterator[object]:
    """The package's process group of one rank on ``cuda:0`` (``init_distributed``), destroyed after."""
    from crossover_sgd.runtime.launch import LaunchInfo
    from crossover_sgd.runtime.process_group import init_distributed, shutdown

    info = LaunchInfo("single", 0, 1, 0, 1, 0)
    ctx = init_distributed(info, device=cuda0(), backend=backend, timeout_s=120)
    try:
        yield ctx
    finally:
        shutdown()


def run_bounded(args: Sequence[str], *, timeout: float, env: Optional[Dict[str, str]] = None,
                cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run ``args`` in a new session; on timeout kill that session's process group (the command
    and every rank it started: a rank left behind would hold the GPU), then fail the test. The
    group is killed however the call ends (pytest-timeout interrupting it included)."""
    from support import ROOT, child_env

    proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or child_env(), cwd=cwd or str(ROOT), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(args[:6])} ... did not finish within {timeout:.0f} s; its stderr ends:\n"
                    f"{err[-3000:]}", pytrace=False)
    finally:
        _kill_group(proc.pid)  # nothing of it may outlive it
        if proc.poll() is None:
            proc.wait()
    return subprocess.CompletedProcess(list(args), proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def error_lines(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if line.strip()]
